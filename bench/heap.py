#!/usr/bin/env python3
"""Where a gateway's heap goes per held connection: valgrind DHAT's output, summed by
allocation site at the heap's peak (t-gmax) and divided by the connections held.

usage: heap.py dhat.out connections"""
import json
import re
import sys

# Frames that say nothing of who allocated: the allocator, std's containers, the runtime glue.
PLUMBING = re.compile(
    r"^(malloc|calloc|realloc|memalign|posix_memalign|aligned_malloc|alloc|__rustc|__rdl|"
    r"UnknownInlinedFun|alloc::|core::|<alloc::|<core::|hashbrown|std::|"
    r"allocate|alloc_impl|box_new|new<|with_capacity|finish_grow|grow_|reserve|do_reserve|"
    r"to_vec|clone<|<T as|pin<|\{closure|\{async)"
)


def frame_name(frame):
    name = re.sub(r"^0x[0-9A-Fa-f]+: ", "", frame)
    return re.sub(r" \(.*\)$", "", name)


def main():
    dhat = json.load(open(sys.argv[1]))
    held = int(sys.argv[2])
    frames = dhat["ftbl"]
    sites = sorted(dhat["pps"], key=lambda p: -p.get("gb", 0))
    total = sum(p.get("gb", 0) for p in sites)
    print(f"live heap at its peak: {total / held:,.0f} bytes per held connection ({total:,} in all)")
    print(f"{'bytes/conn':>10} {'blocks':>7} {'bytes/block':>11}  allocated by")
    for site in sites:
        live = site.get("gb", 0)
        if live < total * 0.005:
            break
        names = [frame_name(frames[i]) for i in site["fs"]]
        telling = [n for n in names if not PLUMBING.match(n)][:3]
        blocks = site.get("gbk", 0)
        print(f"{live / held:>10,.0f} {blocks:>7} {live // max(blocks, 1):>11,}  {' <- '.join(t[:110] for t in telling)}")


main()
