"""Validates rendered Kubernetes manifests offline, for scripts/chart-check.

Every object in the given files must match a schema: the Kubernetes API's
(the JSON schemas kubernetes-validate ships for one Kubernetes version,
strict, so an unknown field is an error) or, for a custom resource, the
openAPIV3Schema of its CustomResourceDefinition among the given CRD files.
An object of a kind neither knows is an error too.

The API server prunes fields a CRD's schema does not declare (unless the
schema preserves unknown fields), so a misspelt field in a custom resource
would vanish without a word; here every object schema that lists its
properties is closed (`additionalProperties: false`) to catch that.

    python chart_validate.py --kubernetes-version 1.37.0 \
        --crds DIR [--crds DIR ...] MANIFEST.yaml [...]

Prints, per manifest file, how many objects of each kind passed and against
what; exits 1 if any object failed.
"""

import argparse
import collections
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml


def open_schema(node):
    """The CRD schema `node` as JSON Schema, with declared objects closed."""
    if isinstance(node, list):
        return [open_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            schema[key] = {name: open_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            schema[key] = open_schema(value)
        else:
            schema[key] = copy.deepcopy(value)
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema.setdefault("anyOf", [])
        schema["anyOf"] = schema["anyOf"] + [{"type": "integer"}, {"type": "string"}]
    if schema.pop("nullable", False) and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    preserves = schema.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in schema and "additionalProperties" not in schema and not preserves:
        schema["additionalProperties"] = False
    return schema


def load_crds(directories):
    """(apiVersion, kind) -> (validator, where the schema came from)."""
    schemas = {}
    for directory in directories:
        for path in sorted(pathlib.Path(directory).glob("*.yaml")):
            for document in yaml.safe_load_all(path.read_text()):
                if not document or document.get("kind") != "CustomResourceDefinition":
                    continue
                spec = document["spec"]
                for version in spec["versions"]:
                    if not version.get("served", False):
                        continue
                    schema = open_schema(version["schema"]["openAPIV3Schema"])
                    api_version = f"{spec['group']}/{version['name']}"
                    key = (api_version, spec["names"]["kind"])
                    schemas[key] = (jsonschema.Draft7Validator(schema), path.parent.name)
    return schemas


def validate_object(obj, crds, kubernetes_version):
    """The schema source the object passed, or raises with the reason."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in crds:
        validator, source = crds[key]
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            path = ".".join(str(p) for p in first.path) or "(top)"
            raise ValueError(f"{path}: {first.message}")
        return f"CRD from {source}"
    try:
        version = kubernetes_validate.validate(obj, kubernetes_version, strict=True)
    except kubernetes_validate.utils.SchemaNotFoundError as err:
        raise ValueError(f"no schema for {key[1]} {key[0]}: {err.message}") from None
    except kubernetes_validate.ValidationError as err:
        path = ".".join(str(p) for p in err.path) or "(top)"
        raise ValueError(f"{path}: {err.message}") from None
    return f"Kubernetes {version}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("--crds", action="append", default=[])
    parser.add_argument("manifests", nargs="+")
    args = parser.parse_args()

    crds = load_crds(args.crds)
    failures = 0
    for manifest in args.manifests:
        passed = collections.Counter()
        objects = [d for d in yaml.safe_load_all(pathlib.Path(manifest).read_text()) if d]
        for obj in objects:
            name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            try:
                source = validate_object(obj, crds, args.kubernetes_version)
                passed[(obj["kind"], source)] += 1
            except ValueError as err:
                failures += 1
                print(f"FAIL {manifest}: {name}: {err}")
        summary = ", ".join(f"{count} {kind} ({source})" for (kind, source), count in sorted(passed.items()))
        print(f"{manifest}: {sum(passed.values())} of {len(objects)} objects valid: {summary}")
    if failures:
        print(f"{failures} objects failed validation")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
