"""``POST /predict`` for a model that takes images: raw ``image/png`` or ``image/jpeg`` bodies
(one image; its series, capture time and purpose in the query string) or ``multipart/form-data``
(one or more ``image`` files, optional ``keys`` as a JSON list and ``purpose`` fields).

Every image is sniffed by its content (415 for anything else, whatever it is called), held to
the node's pixel limit (413) and preprocessed as the bundle declares. The answer holds, per
image, the class probabilities, the class and the model version; the prediction log records the
image's sha256 and the answer, never the image.
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import parse_qs

import numpy as np

from cityfactory.compression.preprocessing import (
    ImageInputError,
    as_inputs,
    pixels,
    sniff,
)
from cityfactory.edge.prediction_log import KeyWindow, RowKeyError, parse_keys

RAW_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG"}


def _multipart(body: bytes, content_type: str) -> tuple[list[bytes], dict[str, str]]:
    """The ``image`` parts and the text fields of a multipart body."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ImageInputError(415, "body: multipart without a boundary")
    parts: list[dict] = []
    current: dict = {}

    def on_part_begin():
        current.clear()
        current.update(headers={}, data=bytearray(), field=b"", value=b"")

    def on_header_field(data, start, end):
        current["field"] += data[start:end]

    def on_header_value(data, start, end):
        current["value"] += data[start:end]

    def on_header_end():
        current["headers"][current["field"].lower()] = current["value"]
        current["field"], current["value"] = b"", b""

    def on_part_data(data, start, end):
        current["data"] += data[start:end]

    def on_part_end():
        parts.append(dict(current))

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    parser.write(body)
    parser.finalize()
    images, fields = [], {}
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if name == "image":
            images.append(bytes(part["data"]))
        elif name in ("keys", "purpose"):
            fields[name] = bytes(part["data"]).decode("utf-8", "replace")
    return images, fields


def read_images(body: bytes, content_type: str, query: bytes, max_images: int) -> tuple[list[bytes], dict]:
    """The request's images and its ``keys``/``purpose`` payload (as ``parse_keys`` reads it)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in RAW_TYPES:
        if sniff(body) != RAW_TYPES[media]:
            raise ImageInputError(415, f"body: declared {media} but the content is {sniff(body) or 'not an image'}")
        params = {k: v[0] for k, v in parse_qs(query.decode("latin-1")).items()}
        key = {k: params[k] for k in ("series", "predicted_for") if k in params}
        return [body], {"keys": [key] if key else None, "purpose": params.get("purpose", "serve")}
    if media == "multipart/form-data":
        images, fields = _multipart(body, content_type)
        if not images:
            raise ImageInputError(415, "body: no 'image' part")
        try:
            keys = json.loads(fields["keys"]) if "keys" in fields else None
        except RecursionError:
            raise RowKeyError("keys: JSON nested too deeply") from None
        except ValueError as exc:
            raise RowKeyError(f"keys: not JSON ({exc})") from None
        if len(images) > max_images:
            raise ImageInputError(413, f"images: {len(images)} images, at most {max_images} per request")
        return images, {"keys": keys, "purpose": fields.get("purpose", "serve")}
    raise ImageInputError(415, f"body: this model takes image/png, image/jpeg or multipart/form-data, not {media or 'nothing'}")


def predict_images(model, body: bytes, content_type: str, query: bytes, max_images: int, max_pixels: int,
                   node_id: str, served_at: float, logged: bool, window: KeyWindow) -> tuple[bytes, int, bytes]:
    """The answer, the images answered, and (if ``logged``) the prediction log's lines for them."""
    images, payload = read_images(body, content_type, query, max_images)
    keys, purpose = parse_keys(payload, len(images), served_at, window)
    prep = model.manifest["preprocessing"]
    batch = as_inputs(np.stack([pixels(data, prep["mode"], int(prep["size"]), max_pixels) for data in images]))
    probabilities = model.predict(batch)
    classes = model.manifest["outputs"][0]["classes"]
    chosen = probabilities.argmax(axis=1)
    answer = json.dumps({"model_version": model.version, "predictions": probabilities.round(6).tolist(),
                         "classes": [classes[i] for i in chosen]}, allow_nan=False).encode()
    lines = b""
    if logged and purpose != "bake":
        lines = ("\n".join(json.dumps({
            "served_at": served_at, "node": node_id, "model_version": model.version, "series": series,
            "predicted_for": predicted_for, "input_sha256": hashlib.sha256(data).hexdigest(),
            "prediction": float(index), "confidence": float(p.max()), "label": classes[index], "purpose": purpose})
            for data, p, index, (series, predicted_for) in zip(images, probabilities, chosen, keys)) + "\n").encode()
    return answer, len(images), lines
