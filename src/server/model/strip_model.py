#!/usr/bin/env python3
"""Writes the parts of botocore's Kinesis and Firehose service models that request validation
uses (operations' input shapes and whether they have output; each shape's type, members in order, required, min, max, pattern,
enum, list member and map key and value shapes), without documentation, next to this script:

    python3 src/server/model/strip_model.py

With `--check` it writes nothing and lists every difference between the files here and the
installed botocore (exit status 1 if any): `tests/suite/wire_model.rs` runs that, so a model update
shows up as a failing test rather than as silent drift.
"""
import glob
import gzip
import json
import os

import botocore

KEPT = ("type", "members", "required", "min", "max", "pattern", "enum", "member", "key", "value")


def load(service):
    data = os.path.join(os.path.dirname(botocore.__file__), "data", service)
    path = sorted(glob.glob(os.path.join(data, "*", "service-2.json*")))[-1]
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def strip(model):
    operations = {}
    for name, op in sorted(model["operations"].items()):
        operations[name] = {"output": "output" in op}
        if "input" in op:
            operations[name]["input"] = op["input"]["shape"]
    shapes = {}
    for name, shape in sorted(model["shapes"].items()):
        kept = {k: shape[k] for k in KEPT if k in shape}
        if "members" in kept:
            # In the model's order, which is the order AWS reports violations in.
            kept["members"] = [[m, ref["shape"]] for m, ref in shape["members"].items()]
        for k in ("member", "key", "value"):
            if k in kept:
                kept[k] = shape[k]["shape"]
        shapes[name] = kept
    return {
        "apiVersion": model["metadata"]["apiVersion"],
        "targetPrefix": model["metadata"]["targetPrefix"],
        "operations": operations,
        "shapes": shapes,
    }


def write(model, f):
    """The model as JSON with one operation or shape a line: compact, and a model update shows
    in a diff as the shapes it changed."""
    f.write("{\n")
    f.write(f' "apiVersion": {json.dumps(model["apiVersion"])},\n')
    f.write(f' "targetPrefix": {json.dumps(model["targetPrefix"])},\n')
    for key in ("operations", "shapes"):
        items = list(model[key].items())
        f.write(f' "{key}": {{\n')
        for i, (name, value) in enumerate(items):
            comma = "," if i + 1 < len(items) else ""
            line = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            f.write(f"  {json.dumps(name)}: {line}{comma}\n")
        f.write(" }" + ("," if key == "operations" else "") + "\n")
    f.write("}\n")


def differences(ours, theirs, path=""):
    """Where two stripped models differ, one line each."""
    if type(ours) is not type(theirs):
        return [f"{path}: shardlog has {ours!r}, botocore {theirs!r}"]
    if isinstance(ours, dict):
        out = []
        for key in sorted(set(ours) | set(theirs)):
            if key not in theirs:
                out.append(f"{path}/{key}: only in shardlog's model")
            elif key not in ours:
                out.append(f"{path}/{key}: only in botocore's model")
            else:
                out.extend(differences(ours[key], theirs[key], f"{path}/{key}"))
        return out
    if ours != theirs:
        return [f"{path}: shardlog has {ours!r}, botocore {theirs!r}"]
    return []


if __name__ == "__main__":
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    check = "--check" in sys.argv[1:]
    found = []
    for service in ("kinesis", "firehose"):
        stripped = strip(load(service))
        out = os.path.join(here, f"{service}.json")
        if check:
            with open(out) as f:
                found += [f"{service}{d}" for d in differences(json.load(f), stripped)]
            continue
        with open(out, "w") as f:
            write(stripped, f)
        print(out, len(stripped["operations"]), "operations", len(stripped["shapes"]), "shapes")
    if check:
        print(f"botocore {botocore.__version__}: {len(found)} differences")
        for line in found:
            print(line)
        sys.exit(1 if found else 0)
