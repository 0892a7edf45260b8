"""Speed and memory benchmarks: each module writes benchmarks/results/<name>.json and a markdown table."""
