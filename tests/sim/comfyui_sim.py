#!/usr/bin/python3
"""ComfyUI server simulator for comfy2mqtt's tests and README demo.

Speaks ComfyUI's WebSocket and HTTP protocol as described in
/work/shared/comfyui/protocol.md (v0.21.0 by default, v0.0.2 on request):
the /ws registry with its reconnect race, feature-flag negotiation, one FIFO
send queue with targeted and broadcast frames, a prompt queue and an execution
worker that produces the frame sequence of §1.7, history, and the HTTP routes
the bridge uses.  Control endpoints under /_sim/ let tests replay recorded
traces, inject arbitrary or malformed frames, drop connections and edit the
queue and history.

Only the standard library and aiohttp (Debian's python3-aiohttp 3.8.4) are
used.  Run with /usr/bin/python3; see tests/sim/README.md.
"""

import argparse
import asyncio
import base64
import copy
import heapq
import itertools
import json
import os
import random
import signal
import ssl
import struct
import sys
import time
import traceback
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from aiohttp import WSMsgType, web

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACES_DIR = REPO_ROOT / "tests" / "data" / "traces"

FOREIGN_CLIENT_ID = "sim-browser"
DEFAULT_STEPS = 20
TRACE_ORDER_TOPOLOGICAL = ["4", "6", "7", "5", "3", "8", "9"]  # v0.1.0+
TRACE_ORDER_RECURSIVE = ["5", "4", "7", "6", "3", "8", "9"]  # before v0.1.0
SENSITIVE_EXTRA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MAXIMUM_HISTORY_SIZE = 10000  # execution.py
FILL_NAMESPACE = uuid.UUID("6f1d2c84-3a5b-4e0f-9c7d-2b8e1f4a6c30")
FILL_SPACING_MS = 6000  # one old prompt every 6 s
TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")

# An 8x8 baseline JPEG: previews only need to be a real image, not a big one.
TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkz"
    "ODdASFxOQERXRTc4UG1RV19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2P/wAARCAAIAAgD"
    "ASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUF"
    "BAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0"
    "NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKj"
    "pKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QA"
    "HwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEE"
    "BSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZH"
    "SElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0"
    "tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCt"
    "RRRXmHvH/9k="
)

# The server flags of v0.21.0 (tests/data/http-samples/features.json).
SERVER_FEATURES = {
    "supports_preview_metadata": True,
    "max_upload_size": 104857600.0,
    "extension": {"manager": {"supports_v4": True}},
    "node_replacements": True,
    "assets": False,
}

# The default text-to-image graph of the traces, used for replayed prompts.
DEFAULT_WORKFLOW = {
    "3": {"class_type": "KSampler", "inputs": {
        "cfg": 7.0, "denoise": 1.0, "latent_image": ["5", 0], "model": ["4", 0],
        "negative": ["7", 0], "positive": ["6", 0], "sampler_name": "euler",
        "scheduler": "normal", "seed": 8566257, "steps": 20}},
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"batch_size": 1, "height": 512, "width": 512}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {
        "clip": ["4", 1], "text": "a lighthouse on a cliff at dusk, volumetric light"}},
    "7": {"class_type": "CLIPTextEncode",
          "inputs": {"clip": ["4", 1], "text": "blurry, lowres, watermark"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage",
          "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}

OOM_MESSAGE = (
    "Allocation on device \nThis error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the "
    "batch_size to a large number.")
OOM_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 535, in execute\n'
    "    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(...)\n",
    '  File "/opt/ComfyUI/execution.py", line 335, in get_output_data\n'
    "    return_values = await _async_map_node_over_list(...)\n",
    '  File "/opt/ComfyUI/nodes.py", line 1572, in sample\n    return common_ksampler(...)\n',
    '  File "/opt/ComfyUI/comfy/samplers.py", line 1180, in sample\n    return sample(...)\n',
]


def step_jpeg(step: int) -> bytes:
    """TINY_JPEG with a comment segment "step N" after its JFIF header: still a
    valid JPEG, and each step's preview differs, so tests can tell which was kept."""
    text = b"step %d" % step
    app0_end = 4 + struct.unpack("!H", TINY_JPEG[4:6])[0]
    return (TINY_JPEG[:app0_end] + b"\xff\xfe" + struct.pack("!H", len(text) + 2) + text
            + TINY_JPEG[app0_end:])


def now_ms() -> int:
    """Milliseconds since the epoch, as ComfyUI's timestamps."""
    return int(time.time() * 1000)


def dumps(obj: Any) -> str:
    """Serialise like ComfyUI (json.dumps defaults: ", " / ": ", ensure_ascii)."""
    return json.dumps(obj)


def parse_version(text: str) -> tuple:
    """'0.21.0' -> (0, 21, 0)."""
    return tuple(int(part) for part in text.split("."))


def make_png() -> bytes:
    """A valid 1x1 grey PNG built with the standard library."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack("!I", len(body)) + kind + body + struct.pack("!I", crc)
    header = struct.pack("!IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


TINY_PNG = make_png()


def encode_ws_frames(opcode: int, payload: bytes, fragment: Optional[int] = None) -> bytes:
    """RFC 6455 server frames (unmasked) for one message.

    With `fragment`, the message is split into chunks of that many bytes: the
    first frame carries `opcode`, the rest are continuation frames (opcode 0),
    and only the last has FIN set.  aiohttp never fragments, so tests that need
    fragmented or invalid frames get them written straight to the transport.
    """
    if fragment and fragment > 0:
        chunks = [payload[i:i + fragment] for i in range(0, len(payload), fragment)]
    else:
        chunks = [payload]
    chunks = chunks or [b""]
    out = bytearray()
    for index, piece in enumerate(chunks):
        fin = 0x80 if index == len(chunks) - 1 else 0
        out.append(fin | (opcode if index == 0 else 0))
        size = len(piece)
        if size < 126:
            out.append(size)
        elif size < 65536:
            out.append(126)
            out += struct.pack("!H", size)
        else:
            out.append(127)
            out += struct.pack("!Q", size)
        out += piece
    return bytes(out)


def build_trace_binary(desc: dict) -> bytes:
    """Build a binary frame from a trace descriptor (tests/data/traces/README.md)."""
    frame = bytearray(bytes.fromhex(desc["binary_hex_header"]))
    event_type = desc.get("event_type")
    if event_type == 4:
        frame += desc["metadata_json"].encode("utf-8")
    elif event_type == 3:
        frame += desc["text"].encode("utf-8")
    if event_type in (1, 4):
        magic = bytes.fromhex(desc.get("image_magic_hex", ""))
        image = magic + b"\x00" * max(0, desc["image_len"] - len(magic))
        frame += image
    frame += b"\x00" * max(0, desc["frame_len"] - len(frame))
    if len(frame) != desc["frame_len"]:
        raise ValueError("binary descriptor lengths disagree: %r" % desc)
    return bytes(frame)


def is_output_node(node: dict) -> bool:
    """OUTPUT_NODE classes produce UI output (an `executed` frame); for graphs that
    never went through validation (replays, /_sim/queue) any class named *Save*."""
    class_type = node.get("class_type") if isinstance(node, dict) else None
    known = NODE_CLASSES.get(class_type) if isinstance(class_type, str) else None
    return known["output"] if known else "Save" in str(class_type or "")


# ---- node classes and prompt validation (execution.py of ComfyUI 0.3.64) -------------

# The choices the simulated server offers; under 21 items, so a wrong value's
# error lists them (execution.py only hides lists longer than 20).
CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]
# comfy/samplers.py SAMPLER_NAMES and SCHEDULER_NAMES of 0.3.64.
SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc",
    "uni_pc_bh2"]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
              "normal", "linear_quadratic", "kl_optimal"]
MAX_RESOLUTION = 16384


def node_class(required: dict, returns: tuple, output: bool = False) -> dict:
    """One NODE_CLASS_MAPPINGS entry: INPUT_TYPES()["required"] as
    {name: (type, options)}, RETURN_TYPES and OUTPUT_NODE."""
    return {"required": required, "returns": returns, "output": output}


# INPUT_TYPES, RETURN_TYPES and OUTPUT_NODE copied from 0.3.64: nodes.py;
# comfy_extras/nodes_images.py (RepeatImageBatch, ImageAddNoise, GetImageSize);
# comfy_extras/nodes_preview_any.py (PreviewAny, whose "*" input takes any type);
# comfy_extras/nodes_post_processing.py (ImageBlur, a V3 node: its options are
# as_dict() of its io.Int/io.Float inputs); custom_nodes/websocket_image_save.py.
NODE_CLASSES = {
    "KSampler": node_class({
        "model": ("MODEL", {"tooltip": "The model used for denoising the input latent."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                         "control_after_generate": True,
                         "tooltip": "The random seed used for creating the noise."}),
        "steps": ("INT", {"default": 20, "min": 1, "max": 10000,
                          "tooltip": "The number of steps used in the denoising process."}),
        "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                          "tooltip": "The Classifier-Free Guidance scale balances creativity "
                          "and adherence to the prompt. Higher values result in images more "
                          "closely matching the prompt however too high values will "
                          "negatively impact quality."}),
        "sampler_name": (SAMPLERS, {"tooltip": "The algorithm used when sampling, this can "
                                    "affect the quality, speed, and style of the generated "
                                    "output."}),
        "scheduler": (SCHEDULERS, {"tooltip": "The scheduler controls how noise is gradually "
                                   "removed to form the image."}),
        "positive": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes "
                                      "you want to include in the image."}),
        "negative": ("CONDITIONING", {"tooltip": "The conditioning describing the attributes "
                                      "you want to exclude from the image."}),
        "latent_image": ("LATENT", {"tooltip": "The latent image to denoise."}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "The amount of denoising applied, lower values will "
                              "maintain the structure of the initial image allowing for image "
                              "to image sampling."}),
    }, ("LATENT",)),
    "CheckpointLoaderSimple": node_class({
        "ckpt_name": (CHECKPOINTS, {"tooltip": "The name of the checkpoint (model) to load."}),
    }, ("MODEL", "CLIP", "VAE")),
    "EmptyLatentImage": node_class({
        "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                          "tooltip": "The width of the latent images in pixels."}),
        "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8,
                           "tooltip": "The height of the latent images in pixels."}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096,
                               "tooltip": "The number of latent images in the batch."}),
    }, ("LATENT",)),
    "CLIPTextEncode": node_class({
        "text": ("STRING", {"multiline": True, "dynamicPrompts": True,
                            "tooltip": "The text to be encoded."}),
        "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
    }, ("CONDITIONING",)),
    "VAEDecode": node_class({
        "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
        "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
    }, ("IMAGE",)),
    "SaveImage": node_class({
        "images": ("IMAGE", {"tooltip": "The images to save."}),
        "filename_prefix": ("STRING", {"default": "ComfyUI", "tooltip": "The prefix for the "
                                       "file to save. This may include formatting information "
                                       "such as %date:yyyy-MM-dd% or %Empty Latent Image.width% "
                                       "to include values from nodes."}),
    }, (), output=True),
    "PreviewImage": node_class({"images": ("IMAGE",)}, (), output=True),
    "SaveImageWebsocket": node_class({"images": ("IMAGE",)}, (), output=True),
    "EmptyImage": node_class({
        "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
        "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
        "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
        "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1,
                          "display": "color"}),
    }, ("IMAGE",)),
    "ImageInvert": node_class({"image": ("IMAGE",)}, ("IMAGE",)),
    "ImageScale": node_class({
        "image": ("IMAGE",),
        "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
        "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
        "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
        "crop": (["disabled", "center"],),
    }, ("IMAGE",)),
    "RepeatImageBatch": node_class({
        "image": ("IMAGE",),
        "amount": ("INT", {"default": 1, "min": 1, "max": 4096}),
    }, ("IMAGE",)),
    "ImageAddNoise": node_class({
        "image": ("IMAGE",),
        "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff,
                         "control_after_generate": True,
                         "tooltip": "The random seed used for creating the noise."}),
        "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
    }, ("IMAGE",)),
    "GetImageSize": node_class({"image": ("IMAGE",)}, ("INT", "INT", "INT")),
    "PreviewAny": node_class({"source": ("*", {})}, (), output=True),
    "ImageBlur": node_class({
        "image": ("IMAGE", {}),
        "blur_radius": ("INT", {"default": 1, "min": 1, "max": 31, "step": 1}),
        "sigma": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 10.0, "step": 0.1}),
    }, ("IMAGE",)),
}

# Primitive widget types that validate_inputs converts before range checks.
CONVERTERS = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def full_type_name(klass: type) -> str:
    """execution.py full_type_name: 'KeyError', or module.qualname."""
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else module + "." + klass.__qualname__


def types_match(received: Any, wanted: Any) -> bool:
    """comfy_execution/validation.py validate_node_input (non-strict): equal, "*"
    (IO.ANY compares equal to anything), or comma-separated unions that overlap."""
    if received == wanted or "*" in (received, wanted):
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    return bool({t.strip() for t in received.split(",")}
                & {t.strip() for t in wanted.split(",")})


def input_error(kind: str, message: str, details: str, extra: dict) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def check_constant(name: str, val: Any, input_type: Any, options: dict,
                   inputs: dict) -> Optional[dict]:
    """The constant-value half of validate_inputs: unwrap __value__, convert
    INT/FLOAT/STRING/BOOLEAN (the converted value replaces the input, as in
    ComfyUI, so the queued prompt carries it), then min, max and the combo list."""
    info = [input_type, options]
    if isinstance(val, dict) and "__value__" in val:
        val = val["__value__"]
        inputs[name] = val
    convert = CONVERTERS.get(input_type) if isinstance(input_type, str) else None
    if convert is not None:
        try:
            val = convert(val)
            inputs[name] = val
        except Exception as ex:  # noqa: BLE001 -- ComfyUI catches everything here
            return input_error("invalid_input_type",
                               "Failed to convert an input value to a %s value" % input_type,
                               "%s, %s, %s" % (name, val, ex),
                               {"input_name": name, "input_config": info,
                                "received_value": val, "exception_message": str(ex)})
    if "min" in options and val < options["min"]:
        return input_error("value_smaller_than_min",
                           "Value {} smaller than min of {}".format(val, options["min"]), name,
                           {"input_name": name, "input_config": info, "received_value": val})
    if "max" in options and val > options["max"]:
        return input_error("value_bigger_than_max",
                           "Value {} bigger than max of {}".format(val, options["max"]), name,
                           {"input_name": name, "input_config": info, "received_value": val})
    if isinstance(input_type, list) and val not in input_type:
        if len(input_type) > 20:  # gigantic lists (model files) are not sent back
            list_info, info = "(list of length %d)" % len(input_type), None
        else:
            list_info = str(input_type)
        return input_error("value_not_in_list", "Value not in list",
                           "%s: '%s' not in %s" % (name, val, list_info),
                           {"input_name": name, "input_config": info, "received_value": val})
    return None


def validate_inputs(prompt: dict, unique_id: str, validated: dict) -> tuple:
    """execution.py validate_inputs: (valid, errors, node_id) for one node, after
    its linked inputs; results are memoised in `validated`. Exceptions (a link to
    a missing node, a bad slot) propagate as in ComfyUI."""
    if unique_id in validated:
        return validated[unique_id]
    inputs = prompt[unique_id]["inputs"]
    required = NODE_CLASSES[prompt[unique_id]["class_type"]]["required"]
    errors: List[dict] = []
    valid = True
    for name, spec in required.items():
        input_type, options = spec[0], (spec[1] if len(spec) > 1 else {})
        info = [input_type, options]
        if name not in inputs:
            errors.append(input_error("required_input_missing", "Required input is missing",
                                      name, {"input_name": name}))
            continue
        val = inputs[name]
        if not isinstance(val, list):
            error = check_constant(name, val, input_type, options, inputs)
            if error is not None:
                errors.append(error)
            continue
        if len(val) != 2:
            errors.append(input_error(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]", name,
                {"input_name": name, "input_config": info, "received_value": val}))
            continue
        o_id = val[0]
        received_type = NODE_CLASSES[prompt[o_id]["class_type"]]["returns"][val[1]]
        if not types_match(received_type, input_type):
            errors.append(input_error(
                "return_type_mismatch", "Return type mismatch between linked nodes",
                "%s, received_type(%s) mismatch input_type(%s)" % (name, received_type,
                                                                   input_type),
                {"input_name": name, "input_config": info, "received_type": received_type,
                 "linked_node": val}))
            continue
        try:
            if validate_inputs(prompt, o_id, validated)[0] is False:
                valid = False
        except Exception as ex:  # noqa: BLE001 -- as ComfyUI: the inner node is invalid
            typ, _, tb = sys.exc_info()
            valid = False
            validated[o_id] = (False, [input_error(
                "exception_during_inner_validation", "Exception when validating inner node",
                str(ex), {"input_name": name, "input_config": info,
                          "exception_message": str(ex), "exception_type": full_type_name(typ),
                          "traceback": traceback.format_tb(tb), "linked_node": val})], o_id)
    result = (False, errors, unique_id) if errors or valid is not True else (True, [], unique_id)
    validated[unique_id] = result
    return result


class InternalError(Exception):
    """What makes ComfyUI's handler raise, so that aiohttp answers 500."""


def check_class_types(prompt: dict, modern: bool) -> Optional[dict]:
    """The first loop of validate_prompt: every node needs a known class_type.
    0.3.64 answers `invalid_prompt`; later servers `missing_node_type` with the
    node's `_meta.title`."""
    for x, node in prompt.items():
        if not isinstance(node, (dict, list, str)):
            raise InternalError("argument of type %r is not iterable" % type(node).__name__)
        if "class_type" not in node:
            if not modern:
                return input_error("invalid_prompt", "Cannot execute because a node is "
                                   "missing the class_type property.", "Node ID '#%s'" % x, {})
            if not isinstance(node, dict):
                raise InternalError("node %s is not an object" % x)
            title = (node.get("_meta") or {}).get("title")
            return input_error(
                "missing_node_type", "Node '%s' has no class_type. The workflow may be "
                "corrupted or a custom node is missing." % (title or "ID #%s" % x),
                "Node ID '#%s'" % x, {"node_id": x, "class_type": None, "node_title": title})
        if not isinstance(node, dict):
            raise InternalError("node %s is not an object" % x)
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in NODE_CLASSES:
            if not modern:
                return input_error("invalid_prompt", "Cannot execute because node %s does "
                                   "not exist." % class_type, "Node ID '#%s'" % x, {})
            title = (node.get("_meta") or {}).get("title", class_type)
            return input_error(
                "missing_node_type", "Node '%s' not found. The custom node may not be "
                "installed." % title, "Node ID '#%s'" % x,
                {"node_id": x, "class_type": class_type, "node_title": title})
    return None


def validate_prompt(prompt: Any, partial: Optional[list], modern: bool) -> tuple:
    """execution.py validate_prompt: (valid, error, good_outputs, node_errors).

    Outputs are validated in the prompt's key order (ComfyUI iterates a set, so
    its order of `dependent_outputs` and of the error lines varies per run)."""
    if not isinstance(prompt, dict):
        raise InternalError("prompt is not an object")
    error = check_class_types(prompt, modern)
    if error is not None:
        return False, error, [], {}
    outputs = [x for x, node in prompt.items() if NODE_CLASSES[node["class_type"]]["output"]
               and (partial is None or x in partial)]
    if not outputs:
        return False, input_error("prompt_no_outputs", "Prompt has no outputs", "", {}), [], {}
    good, failed, node_errors, validated = [], [], {}, {}
    for o in outputs:
        try:
            valid, reasons, _ = validate_inputs(prompt, o, validated)
        except Exception as ex:  # noqa: BLE001 -- as ComfyUI
            typ, _, tb = sys.exc_info()
            valid = False
            reasons = [input_error("exception_during_validation",
                                   "Exception when validating node", str(ex),
                                   {"exception_type": full_type_name(typ),
                                    "traceback": traceback.format_tb(tb)})]
            validated[o] = (False, reasons, o)
        if valid is True:
            good.append(o)
            continue
        failed.append((o, reasons))
        for node_id, result in validated.items():
            # Nodes downstream of an invalid one are invalid without reasons: left out.
            if result[0] is not True and result[1]:
                if node_id not in node_errors:
                    node_errors[node_id] = {"errors": result[1], "dependent_outputs": [],
                                            "class_type": prompt[node_id]["class_type"]}
                node_errors[node_id]["dependent_outputs"].append(o)
    if not good:
        details = "\n".join("%s: %s" % (e["message"], e["details"])
                            for _, reasons in failed for e in reasons)
        return False, input_error("prompt_outputs_failed_validation",
                                  "Prompt outputs failed validation", details, {}), [], node_errors
    return True, None, good, node_errors


def current_inputs_of(node: dict) -> dict:
    """execution_error's current_inputs: each input as a one-item list, str() of links."""
    out = {}
    for name, value in (node.get("inputs") or {}).items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[name] = [value]
        else:
            out[name] = ["<output %s of node %s>" % (value[1], value[0])
                         if isinstance(value, list) and len(value) == 2 else str(value)]
    return out


@dataclass
class Outgoing:
    """One frame on the server's FIFO send queue.

    target: a clientId, or None to broadcast to every registered socket.
    raw: write RFC 6455 frames straight to the transport (needed for
    fragmentation and for TEXT frames whose payload is not valid UTF-8).
    done: resolved with the number of sockets the frame was written to.
    """
    target: Optional[str]
    payload: Union[str, bytes]
    binary: bool = False
    raw: bool = False
    fragment: Optional[int] = None
    done: Optional[asyncio.Future] = None


@dataclass
class SimSocket:
    """One accepted WebSocket connection."""
    serial: int
    client_id: str
    ws: web.WebSocketResponse
    transport: Any
    connected_at: float
    feature_flags: Optional[dict] = None  # what this socket negotiated, if it did
    text_frames: int = 0


@dataclass
class PendingEntry:
    """A queue_pending item; executable ones were POSTed and the worker runs them."""
    item: list
    executable: bool
    seq: int = 0

    def key(self):
        number = self.item[0] if isinstance(self.item[0], (int, float)) else 0
        return (number, self.seq)

    def __lt__(self, other):
        return self.key() < other.key()


@dataclass
class RunRecord:
    """A queue_running item plus what its history entry will need."""
    item: list
    messages: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    last_node: Optional[str] = None
    finished: bool = False  # replay model: a history entry was already written

    @property
    def prompt_id(self) -> str:
        return self.item[1]

    @property
    def client_id(self) -> Optional[str]:
        extra = self.item[3] if isinstance(self.item[3], dict) else {}
        return extra.get("client_id")

    def to_json(self) -> dict:
        return {"item": self.item, "messages": self.messages, "outputs": self.outputs,
                "meta": self.meta, "last_node": self.last_node}

    @classmethod
    def from_json(cls, obj: dict) -> "RunRecord":
        return cls(item=obj["item"], messages=obj.get("messages", []),
                   outputs=obj.get("outputs", {}), meta=obj.get("meta", {}),
                   last_node=obj.get("last_node"))


class PromptFailed(Exception):
    """The simulated node raised (outcome "error")."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.node_id = node_id


class PromptInterrupted(Exception):
    """POST /interrupt (or outcome "interrupt") took effect at this node."""

    def __init__(self, node_id: str):
        super().__init__(node_id)
        self.node_id = node_id


class Server:
    """All simulator state: sockets, send queue, prompt queue, history, worker."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.version_text = args.server_version
        self.version = parse_version(args.server_version)
        self.traces_dir = Path(args.traces_dir)
        # Registry semantics of §1.4: clientId -> newest socket, with metadata.
        self.registry: Dict[str, SimSocket] = {}
        self.metadata: Dict[str, dict] = {}
        self.sockets: Dict[int, SimSocket] = {}
        self.serials = itertools.count(1)
        self.connects = 0
        self.unauthorized = 0  # requests refused by --require-header
        self.queue_reads = 0  # GET /queue answers, for tests that count polls
        self.outbox: asyncio.Queue = asyncio.Queue()
        # Prompt queue and history.
        self.pending: List[PendingEntry] = []
        self.pending_seq = itertools.count()
        self.running: List[RunRecord] = []
        self.history: Dict[str, dict] = {}
        self.fill: Optional[dict] = None  # how --history-fill built the oldest entries
        self.fill_index: Dict[str, int] = {}  # their prompt ids -> index
        self.number = 0
        self.image_counter = 1  # ComfyUI_NNNNN_.png in the output folder
        self.counters: Dict[str, int] = {}  # the same for other names: "type/subfolder/name"
        self.temp_suffix = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz")
                                              for _ in range(5))
        self.queue_changed = asyncio.Event()
        self.interrupt = asyncio.Event()
        self.releases: Dict[str, asyncio.Event] = {}
        self.holding: List[str] = []
        self.interrupts: List[dict] = []  # every POST /interrupt, for tests
        self.frees: List[dict] = []  # every POST /free, for tests
        # every ComfyUI POST (path, JSON body or None), for tests; GET
        # /_sim/state shows them
        self.posts: List[dict] = []
        self.fail_posts: List[int] = []  # statuses the next POSTs answer
        self.tasks: List[asyncio.Task] = []

    # ---- protocol version gates -------------------------------------------

    @property
    def has_timestamps(self) -> bool:
        """timestamp on execution_* and execution_success exist since v0.0.3."""
        return self.version >= (0, 0, 3)

    @property
    def has_display_node(self) -> bool:
        """display_node, meta and topological order since v0.1.0."""
        return self.version >= (0, 1, 0)

    @property
    def has_feature_flags(self) -> bool:
        """feature_flags, /features, progress_state and type 4 since v0.3.45."""
        return self.version >= (0, 3, 45)

    @property
    def has_create_time(self) -> bool:
        """extra_data.create_time (ms) in queue and history items since v0.3.69."""
        return self.version >= (0, 3, 69)

    @property
    def has_missing_node_type(self) -> bool:
        """A node without class_type or with an unknown one: 0.3.64 answers
        `invalid_prompt`; ComfyUI PR #12194 (merged 2026-01-31, between v0.9.2 and
        v0.14.0) made it `missing_node_type`. The cut here is v0.12.0."""
        return self.version >= (0, 12, 0)

    @property
    def progress_state_leaks(self) -> bool:
        """v0.3.45–v0.3.57 broadcast progress_state for every prompt (a bug)."""
        return self.has_feature_flags and self.version < (0, 3, 58)

    # ---- state file ---------------------------------------------------------

    def save_state(self) -> None:
        """Persist history, queue and counters (atomically) if --state-file is set."""
        path = self.args.state_file
        if not path:
            return
        state = {
            "number": self.number,
            "image_counter": self.image_counter,
            "counters": self.counters,
            "history": [[pid, entry] for pid, entry in self.history.items()
                        if pid not in self.fill_index],
            "fill": self.fill,
            "running": [rec.to_json() for rec in self.running],
            "pending": [{"item": e.item, "executable": e.executable}
                        for e in sorted(self.pending)],
        }
        tmp = "%s.tmp%d" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
        os.replace(tmp, path)

    def load_state(self) -> bool:
        """Load the state file, then settle the prompt that was running when saved.
        False when there was none (a fresh server)."""
        path = self.args.state_file
        if not path or not os.path.exists(path):
            return False
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
        self.number = state.get("number", 0)
        self.image_counter = state.get("image_counter", 1)
        self.counters = state.get("counters", {})
        if state.get("fill"):
            self.make_fill(**state["fill"])
        self.history.update((pid, entry) for pid, entry in state.get("history", []))
        for obj in state.get("pending", []):
            self.push_pending(obj["item"], obj.get("executable", False))
        outcome = self.args.finish_running_as or "vanish"
        for obj in state.get("running", []):
            self.finish_saved_run(RunRecord.from_json(obj), outcome)
        self.save_state()
        return True

    def finish_saved_run(self, rec: RunRecord, outcome: str) -> None:
        """Write the history a prompt would have if it ended while we were down."""
        if outcome == "vanish":
            return
        pid = rec.prompt_id
        prompt = rec.item[2] if isinstance(rec.item[2], dict) else {}
        if not rec.messages:
            rec.messages = [["execution_start", self.stamp({"prompt_id": pid})],
                            ["execution_cached", self.stamp({"nodes": [], "prompt_id": pid})]]
        node_id = self.sampler_node(prompt) or rec.last_node or next(iter(prompt), "")
        order = self.node_order(prompt)
        executed = order[:order.index(node_id)] if node_id in order else []
        if outcome == "success":
            for nid, node in prompt.items():
                if is_output_node(node) and nid not in rec.outputs:
                    self.record_output(rec, nid, self.image_output(node))
            if self.has_timestamps:
                rec.messages.append(["execution_success", self.stamp({"prompt_id": pid})])
        elif outcome == "error":
            rec.messages.append(["execution_error",
                                 self.error_data(pid, node_id, prompt, executed)])
        else:
            rec.messages.append(["execution_interrupted",
                                 self.interrupted_data(pid, node_id, prompt, executed)])
        self.write_history(rec, outcome == "success")

    # ---- queue and history model -------------------------------------------

    def queue_remaining(self) -> int:
        """pending + running, as get_queue_info()."""
        return len(self.pending) + len(self.running)

    def status_data(self) -> dict:
        return {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}

    def push_pending(self, item: list, executable: bool) -> None:
        heapq.heappush(self.pending, PendingEntry(item, executable, next(self.pending_seq)))
        self.queue_changed.set()

    def remove_pending(self, entry: PendingEntry) -> None:
        self.pending.remove(entry)
        heapq.heapify(self.pending)

    def find_pending(self, prompt_id: str) -> Optional[PendingEntry]:
        return next((e for e in self.pending if e.item[1] == prompt_id), None)

    def find_running(self, prompt_id: str) -> Optional[RunRecord]:
        return next((r for r in self.running if r.prompt_id == prompt_id), None)

    def next_number(self) -> int:
        number = self.number
        self.number += 1
        return number

    def stamp(self, data: dict) -> dict:
        """Add a timestamp to an execution_* payload on servers that have them."""
        if self.has_timestamps:
            data["timestamp"] = now_ms()
        return data

    def image_output(self, node: Optional[dict] = None) -> dict:
        """The ui output of an output node. SaveImage writes <prefix>_NNNNN_.png
        into the output folder, its prefix's directory part becoming the
        subfolder, with the next free number of that name (nodes.py SaveImage,
        folder_paths.get_save_image_path). PreviewImage writes a temp file whose
        prefix is ComfyUI_temp_ and 5 random letters. Other classes give a
        ComfyUI_NNNNN_.png output like the default SaveImage."""
        class_type = node.get("class_type") if isinstance(node, dict) else None
        prefix, kind = "ComfyUI", "output"
        if class_type == "SaveImage":
            given = (node.get("inputs") or {}).get("filename_prefix")
            prefix = given if isinstance(given, str) and given else "ComfyUI"
        elif class_type == "PreviewImage":
            prefix, kind = "ComfyUI" + self.temp_suffix, "temp"
        subfolder, _, name = os.path.normpath(prefix).rpartition("/")
        if (kind, subfolder, name) == ("output", "", "ComfyUI"):
            counter = self.image_counter
            self.image_counter += 1
        else:
            key = "%s/%s/%s" % (kind, subfolder, name)
            counter = self.counters.get(key, 1)
            self.counters[key] = counter + 1
        return {"images": [{"filename": "%s_%05d_.png" % (name, counter),
                            "subfolder": subfolder, "type": kind}]}

    def record_output(self, rec: RunRecord, node_id: str, output: Any) -> None:
        rec.outputs[node_id] = output
        rec.meta[node_id] = {"node_id": node_id, "display_node": node_id,
                             "parent_node": None, "real_node_id": node_id}

    def write_history(self, rec: RunRecord, success: bool, leave_queue: bool = True) -> None:
        """Write the §4.4 entry for a finished prompt and (by default) drop it
        from running, as ComfyUI's task_done does in one step."""
        entry = {
            "prompt": rec.item,
            "outputs": rec.outputs,
            "status": {"status_str": "success" if success else "error",
                       "completed": success, "messages": rec.messages},
        }
        if self.has_display_node:
            entry["meta"] = rec.meta
        self.store_history(rec.prompt_id, entry)
        rec.finished = True
        if leave_queue and rec in self.running:
            self.running.remove(rec)
        self.queue_changed.set()
        self.save_state()

    def store_history(self, pid: str, entry: Any) -> None:
        """PromptQueue.task_done: past MAXIMUM_HISTORY_SIZE entries the oldest goes
        (checked before adding, so 10,001 entries can exist); a prompt id that is
        already there keeps its place and gets the new entry."""
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.forget_history(next(iter(self.history)))
        self.unfill(pid)  # kept in place, saved as an ordinary entry from now on
        self.history[pid] = entry

    def forget_history(self, pid: str) -> None:
        self.history.pop(pid, None)
        self.unfill(pid)

    def clear_history(self) -> None:
        self.history.clear()
        self.fill, self.fill_index = None, {}

    # ---- a long old history (--history-fill) --------------------------------

    def fill_history(self, count: int) -> None:
        """Put `count` finished prompts in the history, as if the server had run
        them before: one every FILL_SPACING_MS, the newest ending an hour ago.
        They are rebuilt from these few numbers, so the state file stays small.
        ComfyUI never holds more than MAXIMUM_HISTORY_SIZE + 1 entries."""
        count = max(0, min(count, MAXIMUM_HISTORY_SIZE + 1))
        self.make_fill(count=count, end_ms=now_ms() - 3600 * 1000, number0=self.number,
                       image0=self.image_counter, gone=[])
        self.number += count
        self.image_counter += count

    def make_fill(self, count: int, end_ms: int, number0: int, image0: int,
                  gone: List[int]) -> None:
        self.fill = {"count": count, "end_ms": end_ms, "number0": number0, "image0": image0,
                     "gone": list(gone)}
        skip = set(gone)
        prompt = copy.deepcopy(DEFAULT_WORKFLOW)  # shared: nothing edits old entries
        for index in range(count):
            if index not in skip:
                pid, entry = self.fill_entry(index, prompt)
                self.history[pid] = entry
                self.fill_index[pid] = index

    def fill_entry(self, index: int, prompt: dict) -> tuple:
        """Entry `index` (0 = oldest): about 1 in 20 failed, 1 in 20 interrupted;
        two in three came from the browser (client_id sim-browser), the rest had none."""
        fill = self.fill
        pid = str(uuid.uuid5(FILL_NAMESPACE, "%d/%d" % (fill["end_ms"], index)))
        finished = fill["end_ms"] - (fill["count"] - 1 - index) * FILL_SPACING_MS
        started = finished - FILL_SPACING_MS * 7 // 10
        extra = {"client_id": FOREIGN_CLIENT_ID} if index % 3 else {}
        if self.has_create_time:
            extra["create_time"] = started - 150
        item = [fill["number0"] + index, pid, prompt, extra, ["9"]]

        def stamped(data: dict, at: int) -> dict:
            if self.has_timestamps:
                data["timestamp"] = at
            return data
        messages = [["execution_start", stamped({"prompt_id": pid}, started)],
                    ["execution_cached", stamped({"nodes": [], "prompt_id": pid}, started + 3)]]
        outputs, meta, executed = {}, {}, ["4", "6", "7", "5"]
        if index % 20 == 7:
            data = self.error_data(pid, "3", prompt, executed)
            messages.append(["execution_error", stamped(data, finished)])
        elif index % 20 == 13:
            data = self.interrupted_data(pid, "3", prompt, executed)
            messages.append(["execution_interrupted", stamped(data, finished)])
        else:
            name = "ComfyUI_%05d_.png" % (fill["image0"] + index)
            outputs = {"9": {"images": [{"filename": name, "subfolder": "", "type": "output"}]}}
            meta = {"9": {"node_id": "9", "display_node": "9", "parent_node": None,
                          "real_node_id": "9"}}
            if self.has_timestamps:
                messages.append(["execution_success", stamped({"prompt_id": pid}, finished)])
        success = index % 20 not in (7, 13)
        entry = {"prompt": item, "outputs": outputs,
                 "status": {"status_str": "success" if success else "error",
                            "completed": success, "messages": messages}}
        if self.has_display_node:
            entry["meta"] = meta
        return pid, entry

    def unfill(self, pid: str) -> None:
        """An old entry was removed or replaced: the state file must not rebuild it."""
        index = self.fill_index.pop(pid, None)
        if index is not None:
            self.fill["gone"].append(index)

    # ---- sending --------------------------------------------------------------

    def enqueue(self, target: Optional[str], payload: Union[str, bytes], binary: bool = False,
                raw: bool = False, fragment: Optional[int] = None,
                wait: bool = False) -> Optional[asyncio.Future]:
        """Put a frame on the FIFO send queue; optionally return a delivery future."""
        done = asyncio.get_running_loop().create_future() if wait else None
        self.outbox.put_nowait(Outgoing(target, payload, binary, raw, fragment, done))
        return done

    def send_json(self, target: Optional[str], msg_type: str, data: Any) -> None:
        """Queue a {"type", "data"} frame for a clientId (None = broadcast)."""
        self.enqueue(target, dumps({"type": msg_type, "data": data}))

    def broadcast_status(self) -> None:
        """status frames go to every socket."""
        self.send_json(None, "status", self.status_data())

    def send_for_prompt(self, client_id: Optional[str], msg_type: str, data: Any,
                        broadcast_without_client: bool) -> None:
        """Route an execution frame per §1.6: to the prompt's client, or for a
        prompt without client_id either broadcast or to nobody."""
        if client_id is not None:
            self.send_json(client_id, msg_type, data)
        elif broadcast_without_client:
            self.send_json(None, msg_type, data)

    async def sender(self) -> None:
        """The one task that drains the send queue, socket after socket, in order."""
        while True:
            out = await self.outbox.get()
            if out.target is None:
                targets = list(self.registry.values())
            else:
                sock = self.registry.get(out.target)
                targets = [sock] if sock else []  # unregistered id: silently dropped
            written = 0
            for sock in targets:
                if await self.write_frame(sock, out):
                    written += 1
            if out.done is not None and not out.done.done():
                out.done.set_result(written)

    async def write_frame(self, sock: SimSocket, out: Outgoing) -> bool:
        """Write one frame to one socket; failures are ignored like ComfyUI does."""
        if sock.ws.closed or sock.transport is None or sock.transport.is_closing():
            return False
        try:
            if out.raw or out.fragment:
                payload = out.payload if isinstance(out.payload, bytes) else out.payload.encode()
                sock.transport.write(encode_ws_frames(2 if out.binary else 1, payload,
                                                      out.fragment))
            elif out.binary:
                await sock.ws.send_bytes(out.payload)
            else:
                await sock.ws.send_str(out.payload)
        except (ConnectionError, RuntimeError, OSError):
            return False
        return True

    # ---- WebSocket ----------------------------------------------------------

    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=X with ComfyUI's registry semantics (§1.2–§1.4)."""
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        sock = SimSocket(next(self.serials), sid, ws, request.transport, time.time())
        # Reuse replaces the entry without closing the older socket.
        self.registry[sid] = sock
        self.metadata[sid] = {"feature_flags": {}}
        self.sockets[sock.serial] = sock
        self.connects += 1
        try:
            await ws.send_str(dumps({"type": "status", "data": dict(
                self.status_data(), sid=sid)}))
            owner = self.running[0] if self.running else None
            if owner and owner.client_id == sid and owner.last_node is not None:
                await ws.send_str(dumps({"type": "executing",
                                         "data": {"node": owner.last_node}}))
            await self.read_client_frames(sock)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            # The real race: whichever socket ends, its id leaves the registry,
            # even when the entry already points to a newer socket.
            self.registry.pop(sid, None)
            self.metadata.pop(sid, None)
            self.sockets.pop(sock.serial, None)
        return ws

    async def read_client_frames(self, sock: SimSocket) -> None:
        """Handle client text frames: only a first JSON object can negotiate flags."""
        first_message = True
        async for msg in sock.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                if not isinstance(data, dict):
                    continue  # like ComfyUI's data.get() failing: slot not used up
                if first_message and data.get("type") == "feature_flags" \
                        and self.has_feature_flags:
                    flags = data.get("data", {})
                    sock.feature_flags = flags
                    if sock.client_id in self.metadata:
                        self.metadata[sock.client_id]["feature_flags"] = flags
                    # ComfyUI replies through the registry, so after a reconnect
                    # race the reply goes to whichever socket now owns the id.
                    target = self.registry.get(sock.client_id)
                    if target is not None:
                        await target.ws.send_str(dumps({"type": "feature_flags",
                                                        "data": SERVER_FEATURES}))
                first_message = False
            except ValueError:
                pass
            finally:
                sock.text_frames += 1

    def wants_metadata_previews(self, client_id: Optional[str]) -> bool:
        """Does the registered socket of client_id accept type 4 previews?"""
        if client_id is None or not self.has_feature_flags:
            return False
        flags = self.metadata.get(client_id, {}).get("feature_flags")
        return isinstance(flags, dict) and flags.get("supports_preview_metadata") is True

    # ---- execution worker ---------------------------------------------------

    def node_order(self, prompt: dict) -> List[str]:
        """Scheduler order: the traces' order for the default graph, else key order."""
        order = TRACE_ORDER_TOPOLOGICAL if self.has_display_node else TRACE_ORDER_RECURSIVE
        if all(node in prompt for node in order):
            return order + [node for node in prompt if node not in order]
        return list(prompt)

    def run_order(self, prompt: dict, outputs: Any) -> List[str]:
        """node_order restricted to what the outputs to execute need (ComfyUI's
        ExecutionList only adds their ancestors): outputs dropped by a partial
        validation failure, and nodes feeding only them, do not run."""
        order = self.node_order(prompt)
        if not isinstance(outputs, list) or not outputs:
            return order
        needed, stack = set(), [o for o in outputs if o in prompt]
        while stack:
            node_id = stack.pop()
            if node_id in needed:
                continue
            needed.add(node_id)
            inputs = prompt[node_id].get("inputs") if isinstance(prompt[node_id], dict) else None
            for value in (inputs or {}).values():
                if isinstance(value, list) and len(value) == 2 and value[0] in prompt:
                    stack.append(value[0])
        return [node_id for node_id in order if node_id in needed]

    @staticmethod
    def sampler_node(prompt: dict) -> Optional[str]:
        """Node "3", else the first node with a `steps` input."""
        if "3" in prompt:
            return "3"
        for node_id, node in prompt.items():
            if isinstance(node, dict) and "steps" in (node.get("inputs") or {}):
                return node_id
        return None

    def error_data(self, pid: str, node_id: str, prompt: dict, executed: List[str]) -> dict:
        """An execution_error payload shaped like traces/c_execution_error.jsonl."""
        node = prompt.get(node_id, {})
        return self.stamp({
            "prompt_id": pid, "node_id": node_id,
            "node_type": node.get("class_type", ""), "executed": list(executed),
            "exception_message": OOM_MESSAGE, "exception_type": "torch.OutOfMemoryError",
            "traceback": OOM_TRACEBACK, "current_inputs": current_inputs_of(node),
            "current_outputs": list(prompt),
        })

    def interrupted_data(self, pid: str, node_id: str, prompt: dict,
                         executed: List[str]) -> dict:
        node = prompt.get(node_id, {})
        return self.stamp({"prompt_id": pid, "node_id": node_id,
                           "node_type": node.get("class_type", ""),
                           "executed": list(executed)})

    async def worker(self) -> None:
        """Run executable pending prompts one at a time, lowest number first."""
        while True:
            entry = self.take_next()
            if entry is None:
                self.queue_changed.clear()
                await self.queue_changed.wait()
                continue
            await self.execute(entry.item)

    def take_next(self) -> Optional[PendingEntry]:
        if self.running:
            return None
        runnable = [e for e in self.pending if e.executable]
        if not runnable:
            return None
        entry = min(runnable)
        self.remove_pending(entry)
        return entry

    async def execute(self, item: list) -> None:
        """Produce §1.7's frame sequence for one prompt, then history and status."""
        pid, prompt, extra = item[1], item[2], item[3]
        sim = extra.get("sim") if isinstance(extra.get("sim"), dict) else {}
        rec = RunRecord(item=item)
        self.running = [rec]
        self.interrupt.clear()
        self.save_state()
        self.broadcast_status()  # taken: same count

        cid = rec.client_id
        run = PromptRun(self, rec, prompt, sim)
        start = self.stamp({"prompt_id": pid})
        rec.messages.append(["execution_start", start])
        self.send_for_prompt(cid, "execution_start", start, False)
        cached = self.stamp({"nodes": [], "prompt_id": pid})
        rec.messages.append(["execution_cached", cached])
        self.send_for_prompt(cid, "execution_cached", cached, False)

        outcome, node_id = await run.run_nodes()
        if sim.get("hold"):
            self.save_state()
            interrupted = await self.hold(pid)
            if interrupted and outcome == "success":
                outcome, node_id = "interrupted", run.executed[-1] if run.executed else ""
        self.finish(rec, run, outcome, node_id)

    async def hold(self, pid: str) -> bool:
        """Pause before the terminal event until /_sim/release or /interrupt."""
        release = self.releases.setdefault(pid, asyncio.Event())
        self.holding.append(pid)
        try:
            waiters = [asyncio.ensure_future(release.wait()),
                       asyncio.ensure_future(self.interrupt.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            return not release.is_set()
        finally:
            self.holding.remove(pid)
            self.releases.pop(pid, None)

    def finish(self, rec: RunRecord, run: "PromptRun", outcome: str, node_id: str) -> None:
        """Terminal event, history, status, executing null: §1.7 steps 6–8."""
        pid, cid, prompt = rec.prompt_id, rec.client_id, run.prompt
        if outcome == "success":
            if self.has_timestamps:
                data = self.stamp({"prompt_id": pid})
                rec.messages.append(["execution_success", data])
                self.send_for_prompt(cid, "execution_success", data, False)
        elif outcome == "error":
            data = self.error_data(pid, node_id, prompt, run.executed)
            if isinstance(run.error_message, str):
                data["exception_message"] = run.error_message
            rec.messages.append(["execution_error", data])
            self.send_for_prompt(cid, "execution_error", data, False)
        else:
            data = self.interrupted_data(pid, node_id, prompt, run.executed)
            rec.messages.append(["execution_interrupted", data])
            self.send_for_prompt(cid, "execution_interrupted", data, True)
        self.write_history(rec, outcome == "success")
        self.broadcast_status()
        self.send_for_prompt(cid, "executing", {"node": None, "prompt_id": pid}, False)

    # ---- replay ---------------------------------------------------------------

    def resolve_trace(self, name: str) -> Path:
        """A trace name without .jsonl (in --traces-dir) or a path."""
        candidate = Path(name)
        if candidate.suffix == ".jsonl" or "/" in name:
            return candidate if candidate.is_absolute() else self.traces_dir / candidate
        return self.traces_dir / (name + ".jsonl")

    def default_target(self) -> Optional[str]:
        """The clientId of the most recently connected registered socket."""
        socks = sorted(self.registry.values(), key=lambda s: s.serial)
        return socks[-1].client_id if socks else None


class PromptRun:
    """The node-by-node part of one worker execution (§1.7 step 5)."""

    def __init__(self, server: Server, rec: RunRecord, prompt: dict, sim: dict):
        self.server = server
        self.rec = rec
        self.prompt = prompt
        self.pid = rec.prompt_id
        self.cid = rec.client_id
        self.outcome = sim.get("outcome", "success")
        self.steps = int(sim.get("steps", DEFAULT_STEPS))
        self.step_s = float(sim.get("step_ms", server.args.step_ms)) / 1000.0
        self.previews = bool(sim.get("previews", False))
        # a test's own execution_error message (a large one, say)
        self.error_message = sim.get("error_message")
        # The last `preview_burst` steps come without a pause, like a fast sampler's end.
        self.burst = int(sim.get("preview_burst", 0))
        self.order = server.run_order(prompt, rec.item[4] if len(rec.item) > 4 else None)
        self.sampler = server.sampler_node({n: prompt[n] for n in self.order})
        order = self.order
        # Where "error"/"interrupt" outcomes strike when there is no sampler.
        self.last_node = order[-1] if order else None
        self.states: Dict[str, dict] = {}
        self.executed: List[str] = []

    def send(self, msg_type: str, data: Any, broadcast_without_client: bool) -> None:
        self.server.send_for_prompt(self.cid, msg_type, data, broadcast_without_client)

    def progress_state(self, node_id: str, value, maximum, state: str) -> None:
        """Send the cumulative progress_state snapshot (v0.3.45+)."""
        if not self.server.has_feature_flags:
            return
        self.states[node_id] = {
            "value": value, "max": maximum, "state": state, "node_id": node_id,
            "prompt_id": self.pid, "display_node_id": node_id, "parent_node_id": None,
            "real_node_id": node_id}
        data = {"prompt_id": self.pid, "nodes": dict(self.states)}
        if self.server.progress_state_leaks:
            self.server.send_json(None, "progress_state", data)
        else:
            self.send("progress_state", data, True)

    def executing(self, node_id: str) -> None:
        data = {"node": node_id}
        if self.server.has_display_node:
            data["display_node"] = node_id
        data["prompt_id"] = self.pid
        self.rec.last_node = node_id
        self.send("executing", data, False)

    def check_interrupt(self, node_id: str) -> None:
        if self.server.interrupt.is_set():
            raise PromptInterrupted(node_id)

    async def run_nodes(self):
        """Run every node; return (outcome, node_id) with outcome success/error/interrupted."""
        try:
            for node_id in self.order:
                await self.run_node(node_id)
        except PromptFailed as exc:
            return "error", exc.node_id
        except PromptInterrupted as exc:
            return "interrupted", exc.node_id
        return "success", None

    async def run_node(self, node_id: str) -> None:
        node = self.prompt.get(node_id) or {}
        self.progress_state(node_id, 0.0, 1.0, "running")
        self.executing(node_id)
        self.check_interrupt(node_id)
        if self.sampler is None and node_id == self.last_node:
            if self.outcome == "error":
                raise PromptFailed(node_id)
            if self.outcome == "interrupt":
                raise PromptInterrupted(node_id)
        if node_id == self.sampler:
            await self.sample(node_id)
            finished = (self.steps, self.steps)
        else:
            await asyncio.sleep(self.step_s)
            self.check_interrupt(node_id)
            finished = (1.0, 1.0)
        if is_output_node(node):
            output = self.server.image_output(node)
            self.server.record_output(self.rec, node_id, output)
            data = {"node": node_id}
            if self.server.has_display_node:
                data["display_node"] = node_id
            data.update({"output": output, "prompt_id": self.pid})
            self.send("executed", data, False)
        self.progress_state(node_id, finished[0], finished[1], "finished")
        self.executed.append(node_id)

    async def sample(self, node_id: str) -> None:
        """The sampler: `steps` progress updates with optional previews."""
        if self.outcome == "error":
            raise PromptFailed(node_id)
        for step in range(1, self.steps + 1):
            if step <= self.steps - self.burst:
                await asyncio.sleep(self.step_s)
            self.check_interrupt(node_id)
            if self.outcome == "interrupt" and step > self.steps // 2:
                raise PromptInterrupted(node_id)
            self.progress_state(node_id, step, self.steps, "running")
            metadata = self.previews and self.server.wants_metadata_previews(self.cid)
            if metadata:
                self.server.enqueue(self.cid, self.preview_type4(node_id, step), binary=True)
            self.send("progress", {"value": step, "max": self.steps,
                                   "prompt_id": self.pid, "node": node_id}, True)
            if self.previews and not metadata:
                target = self.cid  # None: broadcast, as for prompts without client
                self.server.enqueue(target, struct.pack("!II", 1, 1) + step_jpeg(step),
                                    binary=True)

    def preview_type4(self, node_id: str, step: int) -> bytes:
        meta = dumps({"node_id": node_id, "prompt_id": self.pid, "display_node_id": node_id,
                      "parent_node_id": None, "real_node_id": node_id,
                      "image_type": "image/jpeg"}).encode()
        return struct.pack("!II", 4, len(meta)) + meta + step_jpeg(step)


class ReplayModel:
    """Keeps /queue and /history consistent with a trace while it is replayed.

    Applied to each frame before it is sent:
    * `status` whose count rises by k: k prompts join pending, namely the next
      prompt ids the trace names later and this replay has not placed yet, or
      invented foreign ones (client_id "sim-browser") when there are none;
    * `status` with the same count while nothing runs: the pending head runs;
    * `status` whose count drops: the running prompt leaves the queue, with a
      success history entry if no terminal frame wrote one;
    * the first frame naming a prompt (execution_start, progress, ...) makes it
      the running prompt;
    * a terminal frame (execution_success, execution_error with timestamp,
      execution_interrupted) writes its history entry from the prompt's
      execution_start/execution_cached/terminal messages and executed outputs;
      an `executing` null without one (old servers) writes a success entry.
    Prompts named only by frames a prompt's own client receives get the target
    socket's client_id; the others (e3: broadcast progress only) get none.
    """

    def __init__(self, server: Server, frames: List[dict], target: Optional[str]):
        self.server = server
        self.target = target
        self.order: List[str] = []  # prompt ids in order of first appearance
        self.owned = set()  # named by frames only a prompt's own client gets
        for frame in frames:
            pid = self.prompt_of(frame)
            if pid and pid not in self.order:
                self.order.append(pid)
            if pid and frame.get("type") in ("execution_start", "execution_cached", "executing",
                                             "executed", "execution_success", "execution_error"):
                self.owned.add(pid)
        self.assigned = set()  # ids this replay put in the model or saw named
        self.involved: List[str] = []
        self.records: Dict[str, RunRecord] = {}

    @staticmethod
    def prompt_of(frame: dict) -> Optional[str]:
        """The prompt id a trace line names, if any."""
        if "binary_hex_header" in frame:
            meta = frame.get("metadata")
            return meta.get("prompt_id") if isinstance(meta, dict) else None
        data = frame.get("data")
        pid = data.get("prompt_id") if isinstance(data, dict) else None
        return pid if isinstance(pid, str) else None

    def involve(self, pid: str) -> None:
        if pid not in self.involved:
            self.involved.append(pid)
        self.assigned.add(pid)

    def new_item(self, pid: str, foreign: bool) -> list:
        extra = {"create_time": now_ms()} if self.server.has_create_time else {}
        if foreign:
            extra["client_id"] = FOREIGN_CLIENT_ID
        elif pid in self.owned and self.target is not None:
            extra["client_id"] = self.target
        return [self.server.next_number(), pid, copy.deepcopy(DEFAULT_WORKFLOW), extra, ["9"]]

    def record(self, pid: str) -> RunRecord:
        rec = self.server.find_running(pid) or self.records.get(pid)
        if rec is None:
            entry = self.server.find_pending(pid)
            rec = RunRecord(item=entry.item if entry else self.new_item(pid, False))
        self.records[pid] = rec
        return rec

    def apply(self, frame: dict, upcoming: List[dict]) -> None:
        """Update the model for one frame, before it is sent."""
        if "binary_hex_header" not in frame and frame.get("type") == "status":
            self.on_status(frame, upcoming)
            return
        pid = self.prompt_of(frame)
        if pid is None:
            return
        if pid not in self.assigned or self.server.find_pending(pid):
            self.start(pid)
        self.involve(pid)
        self.on_prompt_frame(pid, frame)

    def on_status(self, frame: dict, upcoming: List[dict]) -> None:
        try:
            count = int(frame["data"]["status"]["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError):
            return
        server = self.server
        delta = count - server.queue_remaining()
        if delta > 0:
            for _ in range(delta):
                self.add_pending(upcoming)
        elif delta == 0:
            if not server.running and server.pending:
                self.start(min(server.pending).item[1])
        else:
            for _ in range(-delta):
                if server.running:
                    self.close_running(server.running[0])
                elif server.pending:
                    server.remove_pending(min(server.pending))
        server.save_state()

    def add_pending(self, upcoming: List[dict]) -> None:
        """Queue the next prompt the trace names later, else a foreign one."""
        later = []
        for frame in upcoming:
            pid = self.prompt_of(frame)
            if pid and pid not in later:
                later.append(pid)
        pid = next((p for p in later if p not in self.assigned), None)
        foreign = pid is None
        if foreign:
            pid = str(uuid.uuid4())
        self.server.push_pending(self.new_item(pid, foreign), False)
        self.involve(pid)

    def start(self, pid: str) -> None:
        """Move a prompt to running (finishing whatever the model had running)."""
        server = self.server
        for rec in list(server.running):
            if rec.prompt_id != pid:
                self.close_running(rec)
        if server.find_running(pid):
            return
        rec = self.record(pid)
        entry = server.find_pending(pid)
        if entry is not None:
            server.remove_pending(entry)
        server.running.append(rec)
        self.involve(pid)
        server.save_state()

    def close_running(self, rec: RunRecord) -> None:
        """The prompt left the queue: success with what was seen, unless written."""
        if not rec.finished:
            self.server.write_history(rec, True)
        elif rec in self.server.running:
            self.server.running.remove(rec)
            self.server.save_state()

    def on_prompt_frame(self, pid: str, frame: dict) -> None:
        if "binary_hex_header" in frame:
            return
        rec = self.record(pid)
        msg_type, data = frame.get("type"), frame.get("data")
        if msg_type in ("execution_start", "execution_cached"):
            rec.messages.append([msg_type, data])
        elif msg_type == "executing":
            if data.get("node") is not None:
                rec.last_node = data.get("display_node", data["node"])
            elif not rec.finished:
                self.finish(rec, "execution_success", None)  # old servers: the only end
        elif msg_type == "executed":
            self.server.record_output(rec, data.get("node"), data.get("output"))
        elif msg_type in TERMINAL_EVENTS:
            if msg_type == "execution_error" and "timestamp" not in data:
                return  # "Execution Blocked": not terminal
            self.finish(rec, msg_type, data)

    def finish(self, rec: RunRecord, msg_type: str, data: Optional[dict]) -> None:
        if data is not None:
            rec.messages.append([msg_type, data])
        # It stays counted as running until the status frame that drops it.
        self.server.write_history(rec, msg_type == "execution_success", leave_queue=False)


# ---- HTTP handlers ---------------------------------------------------------------


async def read_json(request: web.Request, default: Any = None) -> Any:
    """The request body as JSON; `default` for an empty body; ValueError if invalid."""
    body = await request.read()
    if not body.strip():
        return default
    return json.loads(body)


def internal_error() -> web.Response:
    """aiohttp's answer when a ComfyUI handler raises (bad JSON, wrong types)."""
    return web.Response(status=500, text="500 Internal Server Error\n\n"
                        "Server got itself in trouble")


def json_error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=dumps)


def reply(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=dumps)


class Routes:
    """aiohttp handlers bound to one Server."""

    def __init__(self, server: Server):
        self.s = server

    def install(self, app: web.Application) -> None:
        table = [
            ("GET", "/ws", self.s.ws_handler),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_item),
            ("POST", "/history", self.post_history),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("GET", "/system_stats", self.get_system_stats),
            ("GET", "/features", self.get_features),
            ("GET", "/view", self.get_view),
            ("POST", "/_sim/replay", self.sim_replay),
            ("POST", "/_sim/send", self.sim_send),
            ("POST", "/_sim/drop", self.sim_drop),
            ("POST", "/_sim/orphan", self.sim_orphan),
            ("GET", "/_sim/clients", self.sim_clients),
            ("GET", "/_sim/state", self.sim_state),
            ("POST", "/_sim/history", self.sim_history),
            ("POST", "/_sim/queue", self.sim_queue),
            ("POST", "/_sim/release", self.sim_release),
            ("POST", "/_sim/status", self.sim_status),
            ("POST", "/_sim/fail_posts", self.sim_fail_posts),
        ]
        for method, path, handler in table:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)

    # -- ComfyUI routes --

    async def get_prompt(self, request: web.Request) -> web.Response:
        return reply({"exec_info": {"queue_remaining": self.s.queue_remaining()}})

    async def post_prompt(self, request: web.Request) -> web.Response:
        """server.py post_prompt: the number is used up first (failed posts too),
        then execution.py validate_prompt decides between 200 and 400."""
        try:
            body = json.loads(await request.read())
        except ValueError:
            return internal_error()
        s = self.s
        if not isinstance(body, (dict, list, str)):
            return internal_error()  # `"number" in body` raises
        if not isinstance(body, dict):
            body = {} if "number" not in body and "prompt" not in body else None
            if body is None:
                return internal_error()
        if "number" in body:
            try:
                number = float(body["number"])
            except (TypeError, ValueError):
                return internal_error()
        else:
            number = s.next_number()
            if body.get("front"):
                number = -number
        if "prompt" not in body:
            s.save_state()
            error = {"type": "no_prompt", "message": "No prompt provided",
                     "details": "No prompt provided", "extra_info": {}}
            return reply({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body["prompt_id"]) if "prompt_id" in body else str(uuid.uuid4())
        partial = body.get("partial_execution_targets")
        try:
            valid, error, outputs, node_errors = validate_prompt(
                prompt, partial if isinstance(partial, list) else None,
                s.has_missing_node_type)
        except InternalError:
            s.save_state()
            return internal_error()
        s.save_state()
        if not valid:
            return reply({"error": error, "node_errors": node_errors}, status=400)
        extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
        extra = {k: v for k, v in extra.items() if k not in SENSITIVE_EXTRA_KEYS}
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        if s.has_create_time:
            extra["create_time"] = now_ms()
        s.push_pending([number, prompt_id, prompt, extra, outputs], True)
        s.save_state()
        s.broadcast_status()
        return reply({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, request: web.Request) -> web.Response:
        self.s.queue_reads += 1
        return reply({"queue_running": [r.item for r in self.s.running],
                      "queue_pending": [e.item for e in self.s.pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        """server.py post_queue: {"clear": true} is PromptQueue.wipe_queue (one
        status frame), {"delete": [ids]} is delete_queue_item per id (one status
        frame each, two when it empties the queue). Both touch pending prompts
        only: the running prompt goes on and gets its history entry; a removed
        pending prompt never runs and never gets one."""
        try:
            body = await read_json(request)
        except ValueError:
            return internal_error()
        if not isinstance(body, dict):
            return internal_error()  # `"clear" in body` / body["delete"] fail
        if body.get("clear"):
            self.wipe_pending()
        if "delete" in body:
            try:
                to_delete = list(body["delete"])
            except TypeError:
                return internal_error()
            for pid in to_delete:
                self.delete_pending(pid)
        return web.Response(status=200)

    def delete_pending(self, pid: Any) -> None:
        s = self.s
        entry = next((e for e in s.pending if e.item[1] == pid), None)
        if entry is None:
            return
        if len(s.pending) == 1:
            self.wipe_pending()  # ComfyUI's quirk: two status frames
        else:
            s.remove_pending(entry)
        s.save_state()
        s.broadcast_status()

    def wipe_pending(self) -> None:
        self.s.pending = []
        self.s.save_state()
        self.s.broadcast_status()

    async def get_history(self, request: web.Request) -> web.Response:
        """server.py get_history and PromptQueue.get_history: entries in the order
        they were first written (oldest first). offset counts entries from the
        oldest; without offset (or a negative one) and with max_items it is
        len - max_items, so max_items alone gives the newest ones."""
        try:
            max_items = request.query.get("max_items")
            max_items = int(max_items) if max_items is not None else None
            offset = int(request.query.get("offset", -1))
        except ValueError:
            return internal_error()
        if self.s.args.ignore_max_items:
            max_items = None  # a server or proxy that drops the parameter
        history = self.s.history
        if offset < 0 and max_items is not None:
            offset = len(history) - max_items
        out = {}
        for pid in itertools.islice(history, max(offset, 0), None):
            out[pid] = history[pid]
            if max_items is not None and len(out) >= max_items:
                break  # checked after adding, as ComfyUI does
        return reply(out)

    async def get_history_item(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        entry = self.s.history.get(pid)
        return reply({pid: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
        except ValueError:
            return internal_error()
        if not isinstance(body, dict):
            return internal_error()
        if body.get("clear"):
            self.s.clear_history()
        if isinstance(body.get("delete"), list):
            for pid in body["delete"]:
                self.s.forget_history(pid)
        self.s.save_state()
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        """server.py post_interrupt: a body that is not JSON (or none) counts as {};
        a truthy prompt_id interrupts only if that prompt is the running one,
        anything else interrupts whatever runs. An interrupt while idle does
        nothing: the executor clears the flag when the next prompt starts."""
        try:
            body = await read_json(request, {})
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            return internal_error()  # json_data.get fails
        s = self.s
        s.interrupts.append({"prompt_id": body.get("prompt_id"), "at_ms": now_ms()})
        wanted = body.get("prompt_id")
        if not wanted or any(r.prompt_id == wanted for r in s.running):
            s.interrupt.set()
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        """server.py post_free: sets the queue's unload_models / free_memory flags,
        which the worker reads after the running prompt (at once when idle); no
        models exist here, so the effect is only recorded (GET /_sim/state)."""
        try:
            body = await read_json(request)
        except ValueError:
            return internal_error()
        if not isinstance(body, dict):
            return internal_error()
        flags = {name: body[name] for name in ("unload_models", "free_memory")
                 if body.get(name)}
        self.s.frees.append(dict(flags, at_ms=now_ms(),
                                 during=self.s.running[0].prompt_id if self.s.running else None))
        return web.Response(status=200)

    async def get_system_stats(self, request: web.Request) -> web.Response:
        system = {"os": "linux", "ram_total": 67255164928, "ram_free": 51396444160}
        if self.s.version >= (0, 2, 0):
            system["comfyui_version"] = self.s.version_text
            system["required_frontend_version"] = "1.43.18"
        system.update({
            "python_version": sys.version, "pytorch_version": "2.9.1+cu128",
            "embedded_python": False, "argv": ["main.py", "--port", str(request.url.port)]})
        device = {"name": "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", "type": "cuda",
                  "index": 0, "vram_total": 25386352640, "vram_free": 19870203904,
                  "torch_vram_total": 4496293888, "torch_vram_free": 203423744}
        return reply({"system": system, "devices": [device]})

    async def get_features(self, request: web.Request) -> web.Response:
        if not self.s.has_feature_flags:
            raise web.HTTPNotFound()
        return reply(SERVER_FEATURES)

    async def get_view(self, request: web.Request) -> web.Response:
        if not request.query.get("filename"):
            return web.Response(status=400)
        return web.Response(body=TINY_PNG, content_type="image/png")

    # -- control endpoints --

    async def sim_replay(self, request: web.Request) -> web.Response:
        """Send a trace to one socket, frame by frame, optionally updating the model."""
        s = self.s
        try:
            body = await read_json(request, {})
            lines = s.resolve_trace(str(body["trace"])).read_text(encoding="utf-8").splitlines()
            frames = [json.loads(line) for line in lines if line.strip()]
            lines = [line for line in lines if line.strip()]
        except (KeyError, OSError, ValueError, TypeError) as exc:
            return json_error("bad replay request: %s" % exc)
        target = body.get("client_id") or s.default_target()
        interval = float(body.get("interval_ms", 1)) / 1000.0
        model = ReplayModel(s, frames, target) if body.get("update_model", True) else None
        sent = 0
        for index, (line, frame) in enumerate(zip(lines, frames)):
            if model is not None:
                model.apply(frame, frames[index + 1:])
            if target is not None:
                if "binary_hex_header" in frame:
                    done = s.enqueue(target, build_trace_binary(frame), binary=True, wait=True)
                else:
                    done = s.enqueue(target, line, wait=True)
                sent += await done
            if interval > 0:
                await asyncio.sleep(interval)
        prompts = model.involved if model is not None else self.named_prompts(frames)
        return reply({"sent": sent, "prompts": prompts})

    @staticmethod
    def named_prompts(frames: List[dict]) -> List[str]:
        out: List[str] = []
        for frame in frames:
            pid = ReplayModel.prompt_of(frame)
            if pid and pid not in out:
                out.append(pid)
        return out

    async def sim_send(self, request: web.Request) -> web.Response:
        """Queue arbitrary frames (text, raw bytes as TEXT, binary, huge) to a socket."""
        try:
            body = await read_json(request, {})
            target = body.get("client_id")
            fragment = body.get("fragment")
            fragment = int(fragment) if fragment else None
            specs = list(body.get("frames", []))
            if body.get("huge_text_bytes"):
                specs.append({"huge_text_bytes": body["huge_text_bytes"]})
            futures = [self.queue_spec(target, spec, fragment) for spec in specs]
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return json_error("bad send request: %s" % exc)
        results = await asyncio.gather(*futures)
        return reply({"sent": sum(results)})

    def queue_spec(self, target: Optional[str], spec: dict,
                   fragment: Optional[int]) -> asyncio.Future:
        s = self.s
        if "text" in spec:
            return s.enqueue(target, spec["text"], fragment=fragment, wait=True)
        if "text_b64" in spec:
            return s.enqueue(target, base64.b64decode(spec["text_b64"]), raw=True,
                             fragment=fragment, wait=True)
        if "binary_b64" in spec:
            return s.enqueue(target, base64.b64decode(spec["binary_b64"]), binary=True,
                             fragment=fragment, wait=True)
        if "huge_text_bytes" in spec:
            return s.enqueue(target, huge_text(int(spec["huge_text_bytes"])),
                             fragment=fragment, wait=True)
        raise ValueError("frame needs text, text_b64, binary_b64 or huge_text_bytes")

    async def sim_drop(self, request: web.Request) -> web.Response:
        """Abort TCP connections without a close frame (all sockets of an id, or all)."""
        try:
            body = await read_json(request, {})
        except ValueError as exc:
            return json_error(str(exc))
        wanted = body.get("client_id") if isinstance(body, dict) else None
        dropped = 0
        for sock in list(self.s.sockets.values()):
            if wanted is None or sock.client_id == wanted:
                if sock.transport is not None:
                    sock.transport.abort()
                dropped += 1
        return reply({"dropped": dropped})

    async def sim_orphan(self, request: web.Request) -> web.Response:
        """The end state of the reconnect race (protocol.md §1.4): the
        registry entry of client_id is deleted while its socket stays open,
        so that socket receives nothing at all any more, not even
        broadcasts."""
        try:
            body = await read_json(request, {})
        except ValueError as exc:
            return json_error(str(exc))
        cid = body.get("client_id") if isinstance(body, dict) else None
        removed = self.s.registry.pop(cid, None) is not None
        return reply({"orphaned": removed})

    async def sim_clients(self, request: web.Request) -> web.Response:
        s = self.s
        sockets = [{
            "serial": sock.serial, "client_id": sock.client_id,
            "registered": s.registry.get(sock.client_id) is sock,
            "feature_flags": sock.feature_flags if sock.feature_flags is not None else {},
            "text_frames": sock.text_frames, "connected_at": sock.connected_at,
        } for sock in sorted(s.sockets.values(), key=lambda x: x.serial)]
        return reply({"registry": {cid: sock.serial for cid, sock in s.registry.items()},
                      "sockets": sockets, "connects": s.connects,
                      "unauthorized": s.unauthorized})

    async def sim_state(self, request: web.Request) -> web.Response:
        s = self.s
        history = list(s.history) if request.query.get("history") != "count" else None
        return reply({"holding": list(s.holding),
                      "running": [r.prompt_id for r in s.running],
                      "pending": [e.item[1] for e in sorted(s.pending)],
                      "history": history, "history_count": len(s.history),
                      "number": s.number, "interrupts": s.interrupts, "frees": s.frees, "posts": s.posts,
                      "queue_reads": s.queue_reads})

    async def sim_history(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request, {})
            pid = str(body["prompt_id"])
        except (ValueError, KeyError, TypeError) as exc:
            return json_error("bad history request: %s" % exc)
        if body.get("delete"):
            self.s.forget_history(pid)
        else:
            self.s.store_history(pid, body.get("entry"))
        self.s.save_state()
        return reply({"ok": True})

    async def sim_queue(self, request: web.Request) -> web.Response:
        """Replace queue_running / queue_pending with raw items (never executed)."""
        s = self.s
        try:
            body = await read_json(request, {})
            if "running" in body:
                s.running = [RunRecord(item=list(item)) for item in body["running"]]
            if "pending" in body:
                s.pending = []
                for item in body["pending"]:
                    s.push_pending(list(item), False)
        except (ValueError, TypeError, AttributeError) as exc:
            return json_error("bad queue request: %s" % exc)
        s.queue_changed.set()
        s.save_state()
        return reply({"ok": True})

    async def sim_release(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request, {})
            pid = str(body["prompt_id"])
        except (ValueError, KeyError, TypeError) as exc:
            return json_error("bad release request: %s" % exc)
        was_holding = pid in self.s.holding
        self.s.releases.setdefault(pid, asyncio.Event()).set()
        return reply({"released": was_holding})

    async def sim_fail_posts(self, request: web.Request) -> web.Response:
        """{"status": 503, "count": 2}: the next `count` ComfyUI POSTs answer
        `status` with aiohttp's error text, as a crashing handler or a proxy
        in front of a dead server does (recorded in posts all the same)."""
        try:
            body = await read_json(request, {})
            self.s.fail_posts = [int(body["status"])] * int(body.get("count", 1))
        except (ValueError, KeyError, TypeError) as exc:
            return json_error("bad fail_posts request: %s" % exc)
        return reply({"fail_posts": self.s.fail_posts})

    async def sim_status(self, request: web.Request) -> web.Response:
        self.s.broadcast_status()
        return reply({"queue_remaining": self.s.queue_remaining()})


def huge_text(size: int) -> str:
    """A valid JSON text frame of `size` bytes (at least the envelope's length)."""
    head, tail = '{"type": "sim.huge", "data": {"pad": "', '"}}'
    return head + "x" * max(0, size - len(head) - len(tail)) + tail


@web.middleware
async def not_found_middleware(request: web.Request, handler):
    """Everything that is not a route answers 404 (also wrong methods)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        raise web.HTTPNotFound()


def slow_middleware(delay_ms: float):
    """Plays a slow server: every ComfyUI HTTP route answers after delay_ms
    (the WebSocket and /_sim/ stay prompt, so a test can still drive it)."""
    @web.middleware
    async def slow(request: web.Request, handler):
        path = request.path[4:] if request.path.startswith("/api/") else request.path
        if path != "/ws" and not path.startswith("/_sim/"):
            await asyncio.sleep(delay_ms / 1000.0)
        return await handler(request)
    return slow


def post_record_middleware(server: "Server"):
    """Records every ComfyUI POST in server.posts and answers the statuses
    /_sim/fail_posts queued instead of running the route."""
    @web.middleware
    async def record(request: web.Request, handler):
        path = request.path[4:] if request.path.startswith("/api/") else request.path
        if request.method != "POST" or path.startswith("/_sim/"):
            return await handler(request)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        server.posts.append({"path": path, "body": body, "at_ms": now_ms()})
        if server.fail_posts:
            status = server.fail_posts.pop(0)
            return web.Response(status=status, text="%d Service Unavailable\n\n"
                                "Server got itself in trouble" % status)
        return await handler(request)
    return record


def require_header_middleware(server: "Server", name: str, value: str):
    """Plays an authenticating reverse proxy: every request, the WebSocket
    upgrade included, must carry the header `name: value`, else 401
    (counted in server.unauthorized)."""
    @web.middleware
    async def check(request: web.Request, handler):
        if request.headers.get(name) != value:
            server.unauthorized += 1
            return web.Response(status=401, text="401: missing or wrong %s header\n" % name,
                                headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)
    return check


def parse_header(text: str):
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(text)
    return name.strip(), value.strip()


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ComfyUI protocol simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--state-file")
    parser.add_argument("--traces-dir", default=str(DEFAULT_TRACES_DIR))
    parser.add_argument("--server-version", default="0.21.0")
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--finish-running-as",
                        choices=["success", "error", "interrupted", "vanish"],
                        help="how the prompt running at the last save ends on restart "
                             "(default: vanish)")
    parser.add_argument("--history-fill", type=int, default=0, metavar="N",
                        help="a fresh server (no state file yet) starts with N old "
                             "finished prompts in its history")
    parser.add_argument("--ignore-max-items", action="store_true",
                        help="GET /history lists every entry whatever max_items says")
    parser.add_argument("--tls-cert", help="serve https/wss with this certificate (PEM)")
    parser.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    parser.add_argument("--require-header", metavar='"NAME: VALUE"',
                        help="answer 401 to every request without this header")
    parser.add_argument("--http-delay-ms", type=float, default=0, metavar="MS",
                        help="answer every ComfyUI HTTP route after MS (a slow server)")
    parser.add_argument("--servers", type=int, default=1, metavar="N",
                        help="N independent servers in this process, on --port, --port+1, ... "
                             "(or N free ports with --port 0); one LISTENING line lists them")
    args = parser.parse_args(argv)
    if not 1 <= args.servers <= 1000:
        parser.error("--servers takes 1..1000")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.require_header is not None:
        try:
            args.require_header = parse_header(args.require_header)
        except ValueError:
            parser.error('--require-header must look like "Name: value"')
    try:
        parse_version(args.server_version)
    except ValueError:
        parser.error("--server-version must look like 0.21.0")
    return args


async def start_server(args: argparse.Namespace, index: int) -> tuple:
    """One server on its own port; returns (server, runner, port)."""
    if args.servers > 1 and args.state_file:
        args = argparse.Namespace(**vars(args))
        args.state_file = "%s.%d" % (args.state_file, index)
    server = Server(args)
    if not server.load_state() and args.history_fill:
        server.fill_history(args.history_fill)
        server.save_state()
    middlewares = [not_found_middleware]
    middlewares.insert(0, post_record_middleware(server))
    if args.http_delay_ms > 0:
        middlewares.insert(0, slow_middleware(args.http_delay_ms))
    if args.require_header is not None:
        middlewares.insert(0, require_header_middleware(server, *args.require_header))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 ** 2)
    Routes(server).install(app)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
    port = args.port + index if args.port else 0
    site = web.TCPSite(runner, args.host, port, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    server.tasks = [asyncio.ensure_future(server.sender()),
                    asyncio.ensure_future(server.worker())]
    return server, runner, port


async def serve(args: argparse.Namespace) -> None:
    """Start the server(s), announce the port(s), run until SIGTERM/SIGINT."""
    started = [await start_server(args, i) for i in range(args.servers)]
    ports = " ".join(str(port) for _, _, port in started)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("%s\n" % ports)
        os.replace(tmp, args.port_file)
    print("LISTENING %s" % ports, flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server, runner, _ in started:
        # Like ComfyUI exiting: connections drop without a close frame.
        for sock in list(server.sockets.values()):
            if sock.transport is not None:
                sock.transport.abort()
        for task in server.tasks:
            task.cancel()
        try:
            await asyncio.wait_for(runner.cleanup(), 2.0)
        except asyncio.TimeoutError:
            pass


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
