# Sourced by the gpu-*.sh scripts: on the lent device machine, install the carried wheels in .whl/ (diffusers,
# pydantic, ftfy and what they need that the machine lacks); elsewhere the package must already be importable.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -d "$root/.whl" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$root"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$root/src
  # PyAV (36 MB) is missing there and too big to carry; these jobs never decode a video, the CLI only imports it.
  python3 -c "import av" 2>/dev/null || { mkdir -p /tmp/stub && touch /tmp/stub/av.py && PYTHONPATH=$PYTHONPATH:/tmp/stub; }
fi
export PYTHONUNBUFFERED=1
