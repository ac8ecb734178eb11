#!/usr/bin/python3
"""Writes libFuzzer seed sets from the shared WebSocket traces.

Seed sets (one directory each under --out):
  text    every text-frame line of every trace, byte for byte, one per file
  binary  every binary frame rebuilt from its descriptor (see
          tests/data/traces/README.md): header bytes, then the type-4
          metadata or type-3 text, then the image magic padded with filler
          up to image_len (capped at --max-image bytes so seeds stay small),
          then filler up to frame_len for frames of unknown type

Run by ctest as the fixture `fuzz.seeds`; the sets are rebuilt from scratch
on every run so a changed trace never leaves a stale seed behind.
"""

import argparse
import json
import os
import shutil
import sys

SETS = ("text", "binary")


EXTRA_TEXT = (
    '{"type": "execution_error", "data": {"prompt_id": "p\\u00e9\\ud83d\\ude00", '
    '"node_id": "3", "exception_message": "bad file \\udcff\\udcfe.png", '
    '"traceback": ["\\ud800", "x\\udc00y"], "timestamp": 1}}',
    '{"type": "execution_start", "data": {"prompt_id": "evil\\u0007id\\u0085\\uffff", '
    '"timestamp": 1}}',
    '{"type": "my\\u0002type\\ufdd0", "data": {"k\\ud800": "\\ud83d"}}',
)


def filler(n, offset=0):
    """Deterministic non-constant bytes, so seeds are reproducible."""
    return bytes(((offset + i) * 151 + 7) & 0xFF for i in range(n))


def build_binary(desc, max_image):
    """Bytes of the frame a binary descriptor stands for."""
    frame = bytearray(bytes.fromhex(desc["binary_hex_header"]))
    etype = desc.get("event_type")
    if etype == 4:
        frame += desc["metadata_json"].encode("utf-8")
    elif etype == 3:
        frame += desc["text"].encode("utf-8")
    image_len = desc.get("image_len")
    capped = False
    if image_len is not None:
        magic = bytes.fromhex(desc.get("image_magic_hex", ""))
        keep = max(len(magic), min(image_len, max_image))
        capped = keep < image_len
        frame += magic + filler(keep - len(magic), len(frame))
    elif len(frame) < desc["frame_len"]:
        # unknown type: the payload is unspecified, keep the length
        frame += filler(desc["frame_len"] - len(frame), len(frame))
    if not capped and len(frame) != desc["frame_len"]:
        raise ValueError("%s: built %d bytes, frame_len says %d"
                         % (desc["binary_hex_header"], len(frame),
                            desc["frame_len"]))
    return bytes(frame)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", required=True, help="directory of *.jsonl")
    ap.add_argument("--out", required=True, help="seed root directory")
    ap.add_argument("--max-image", type=int, default=64 * 1024,
                    help="cap on the image bytes of a binary seed")
    ap.add_argument("--mkdir", nargs="*", default=[],
                    help="extra directories to create (fuzz corpora)")
    args = ap.parse_args()

    for d in args.mkdir:
        os.makedirs(d, exist_ok=True)
    for s in SETS:
        shutil.rmtree(os.path.join(args.out, s), ignore_errors=True)
        os.makedirs(os.path.join(args.out, s))

    counts = dict.fromkeys(SETS, 0)
    traces = sorted(f for f in os.listdir(args.traces)
                    if f.endswith(".jsonl"))
    if not traces:
        sys.exit("no *.jsonl in %s" % args.traces)
    for name in traces:
        stem = name[:-len(".jsonl")]
        with open(os.path.join(args.traces, name), "rb") as f:
            lines = f.read().split(b"\n")
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            if "binary_hex_header" in obj:
                kind, data = "binary", build_binary(obj, args.max_image)
            else:
                kind, data = "text", line
            path = os.path.join(args.out, kind,
                                "%s_%04d.%s" % (stem, lineno,
                                                "json" if kind == "text"
                                                else "bin"))
            with open(path, "wb") as out:
                out.write(data)
            counts[kind] += 1
    # Text frames that no trace has: escapes ComfyUI's json.dumps writes
    # for non-ASCII, lone surrogates (a non-UTF-8 file name, half an emoji)
    # and control characters in ids (they must never reach MQTT strings).
    for i, line in enumerate(EXTRA_TEXT, 1):
        path = os.path.join(args.out, "text", "extra_%04d.json" % i)
        with open(path, "wb") as out:
            out.write(line.encode("ascii"))
        counts["text"] += 1
    for s in SETS:
        if counts[s] == 0:
            sys.exit("seed set %s is empty" % s)
    print("seeds: %s" % ", ".join("%s=%d" % kv for kv in counts.items()))


if __name__ == "__main__":
    main()
