"""schemathesis hooks for scripts/api-fuzz: the rules of our API that JSON
Schema cannot state, so that generated requests the server rightly refuses
are not counted as "a schema-valid request was refused".

- POST /api/orders: each SKU on one line only. The document's `uniqueItems`
  compares whole lines, so it forbids identical lines but not the same SKU
  with two different quantities; the `items` description says so, and the
  server answers such a body with 400 naming `items[i].sku`.
"""

import schemathesis


def _is_operation(context, method, path):
    operation = context.operation
    return (
        operation is not None
        and operation.method.upper() == method
        and operation.path == path
    )


@schemathesis.hook
def filter_case(context, case):
    # `filter_case` rather than `filter_body`: the coverage phase runs only
    # case-level hooks.
    if not _is_operation(context, "POST", "/api/orders"):
        return True
    body = case.body
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return True
    # Only string SKUs can repeat one another; anything else is refused as
    # mistyped, which the negative tests expect.
    skus = [
        item.get("sku")
        for item in items
        if isinstance(item, dict) and isinstance(item.get("sku"), str)
    ]
    return len(skus) == len(set(skus))
