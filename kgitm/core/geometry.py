"""Box geometry shared by the visual graphs, the scene-graph collation, GSMN and SGM: normalisation,
180-degree rotation, polar pseudo-coordinates and IoU."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor


def normalize_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Pixel corner boxes -> boxes in ``[0, 1]`` relative to the image size.

    Done once, when data is loaded (GSMN's release divided in place on every read).

    Shapes:
        boxes: ``(N, R, 4)`` pixel ``x1, y1, x2, y2``; sizes: ``(N, 2)`` ``(width, height)``.
        Output: ``(N, R, 4)``.
    """
    wh = sizes.to(boxes.dtype).clamp_min(1.0)
    scale = torch.cat([wh, wh], dim=-1).unsqueeze(1)
    return boxes / scale


def rotate_boxes(boxes: Tensor) -> Tensor:
    """Normalised corner boxes of the image rotated by 180 degrees: ``(1 - x2, 1 - y2, 1 - x1, 1 - y1)``.

    Every pairwise direction is reversed (the polar angle moves by pi, the distance is kept), so
    "left of", "above", "on" and "in front of" all become false between the same two boxes.

    Shapes:
        boxes: ``(..., 4)`` corners in ``[0, 1]``. Output: the same.
    """
    return 1.0 - boxes[..., [2, 3, 0, 1]]


def polar_pseudo_coordinates(boxes: Tensor, *, convention: Literal["kgitm", "gsmn_release"] = "kgitm") -> Tensor:
    """GSMN's pseudo-coordinates between every ordered pair of boxes.

    For boxes ``i`` and ``j`` with centres ``c_i, c_j`` (in image-normalised coordinates) returns
    ``(rho, theta)``: ``rho = ||c_j - c_i||`` and ``theta = atan2(dy, dx)`` of ``d = c_j - c_i``
    (``convention="kgitm"``), scaled to ``[-1, 1]`` by dividing by pi. ``convention="gsmn_release"``
    is the public release's angle (``graph_model.py`` ``_compute_pseudo``): ``atan2(x_i - x_j, y_i - y_j)``,
    arguments in the other order and the vector from ``j`` to ``i``; it is ``-atan2(dy, dx) - pi/2``
    except for coincident centres, where both are 0.

    Shapes:
        boxes: ``(N, R, 4)`` normalised corners. Output: ``(N, R, R, 2)``.
    """
    centre = torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)
    delta = centre.unsqueeze(1) - centre.unsqueeze(2)  # [n, i, j] = c_j - c_i
    rho = delta.norm(dim=-1)
    if convention == "gsmn_release":
        away = centre.unsqueeze(2) - centre.unsqueeze(1)  # [n, i, j] = c_i - c_j, as the release subtracts
        theta = torch.atan2(away[..., 0], away[..., 1]) / math.pi
    elif convention == "kgitm":
        theta = torch.atan2(delta[..., 1], delta[..., 0]) / math.pi
    else:
        raise ValueError(f"polar_pseudo_coordinates: convention must be 'kgitm' or 'gsmn_release', got {convention!r}")
    return torch.stack([rho, theta], dim=-1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of corner boxes, broadcast over leading dimensions.

    Pairs whose union is empty (two degenerate boxes) get IoU ``0``. For all pairs between two sets
    use ``box_iou(a.unsqueeze(-2), b.unsqueeze(-3))``.

    Shapes:
        a: ``(..., 4)`` ``x1, y1, x2, y2``; b: ``(..., 4)`` broadcastable with ``a``. Output: ``(...)``.
    """
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp_min(0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp_min(0).prod(-1)
    union = area_a + area_b - inter
    nonempty = union > 0
    return torch.where(nonempty, inter / torch.where(nonempty, union, torch.ones_like(union)), torch.zeros_like(union))
