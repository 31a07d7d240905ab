"""Rewrites the hand-written part of BENCHMARKS.md from benches/sections/*.md
without re-running the matrix: keeps everything before the first section's
heading, then appends every section in name order, as benches/report.py
does after a full run."""
import os
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sections_dir = os.path.join(root, "benches", "sections")
names = sorted(n for n in os.listdir(sections_dir) if n.endswith(".md"))
sections = [open(os.path.join(sections_dir, n)).read().rstrip() + "\n" for n in names]
path = os.path.join(root, "BENCHMARKS.md")
text = open(path).read()
first_heading = sections[0].splitlines()[0]
cut = text.find("\n" + first_heading + "\n")
if cut < 0:
    sys.exit(f"BENCHMARKS.md has no line {first_heading!r} to splice at")
out = text[: cut + 1] + "\n".join(sections)
open(path, "w").write(out)
print(f"BENCHMARKS.md: {len(sections)} sections after the matrix results")
