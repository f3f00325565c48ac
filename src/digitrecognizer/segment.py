"""Segmentation of numbers: the marks of digits written side by side, grouped and split into candidate digits,
each as its MNIST-style input (numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .preprocess import TooManyMarks, ink_map, label_in_box, near_blank, normalize_ink


@dataclass(frozen=True)
class Piece:
    """One segmented digit: its MNIST-style input and its box (left, top, right, bottom) in input pixels."""

    input28: np.ndarray
    box: tuple[int, int, int, int]



def _significant_components(mask: np.ndarray) -> tuple[np.ndarray, list[tuple[slice, slice]], np.ndarray]:
    """The components of the mask without specks, labelled once: (labels over the whole image, each one's
    slices, each one's area), component i being label i + 1, in raster order."""
    labels = np.zeros(mask.shape, np.int32)
    labelled = label_in_box(mask)
    if labelled is None:
        return labels, [], np.zeros(0, np.int64)
    box, local, areas, significant = labelled
    renumber = np.zeros(len(areas) + 1, np.int32)
    renumber[1:][significant] = np.arange(1, significant.sum() + 1)
    labels[box] = renumber[local]
    return labels, ndimage.find_objects(labels), areas[significant]




def _group_columns(boxes: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """Group components that overlap horizontally: the detached bar of a 5 or the parts of a broken 4 belong
    to the digit beneath or beside them, while separate digits sit side by side."""
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][0])
    groups: list[list[int]] = []
    spans: list[list[int]] = []
    for i in order:
        left, _, right, _ = boxes[i]
        if groups:
            g_left, g_right = spans[-1]
            overlap = min(right, g_right) - max(left, g_left)
            narrower = min(right - left, g_right - g_left)
            if overlap > 0.4 * narrower:
                groups[-1].append(i)
                spans[-1] = [min(left, g_left), max(right, g_right)]
                continue
        groups.append([i])
        spans.append([left, right])
    return groups


SIDE_STEP_COST = 0.3  # a cut path's cost for moving one column sideways, in pixels of ink crossed


def _cut_paths(mask: np.ndarray, count: int) -> list[np.ndarray]:
    """Boundaries that split the ink of `count` touching digits (mask: the atom's box): for each boundary, the
    column on every row of a top-to-bottom path that crosses the least ink, moving at most one column per
    row, searched within 30% of a digit's width of an even split. Where slanted digits lean into each other a
    straight cut slices through both; the path goes round the strokes and crosses only where they touch.
    Returns count + 1 boundaries (the first all 0, the last all the width), or [] when they don't fit."""
    height, width = mask.shape
    ink = mask.astype(np.float32)
    bounds = [np.zeros(height, np.int64)]
    for k in range(1, count):
        centre = k * width / count
        lo = max(int(centre - 0.3 * width / count), int(bounds[-1].max()) + 2)
        hi = min(int(centre + 0.3 * width / count) + 1, width - 2)
        if hi <= lo:
            return []
        cost = ink[:, lo:hi]
        total = cost[0].copy()
        moves = np.zeros((height, hi - lo), np.int8)  # -1, 0, +1: where each row's best path came from
        for r in range(1, height):
            from_left = np.concatenate([[np.inf], total[:-1]]) + SIDE_STEP_COST
            from_right = np.concatenate([total[1:], [np.inf]]) + SIDE_STEP_COST
            options = np.stack([from_left, total, from_right])
            step = options.argmin(0)
            total = options[step, np.arange(hi - lo)] + cost[r]
            moves[r] = step - 1
        column = np.empty(height, np.int64)
        column[-1] = int(np.argmin(total))
        for r in range(height - 1, 0, -1):
            column[r - 1] = column[r] + moves[r, column[r]]
        bounds.append(column + lo)
    bounds.append(np.full(height, width, np.int64))
    return bounds


@dataclass(frozen=True)
class Candidate:
    """One way to read the atoms[start:stop] of a number: as these digits (pieces)."""

    start: int
    stop: int
    pieces: list[Piece]


@dataclass(frozen=True)
class Atom:
    """Ink that certainly belongs together: connected strokes, plus strokes above or below them."""

    mask: np.ndarray
    left: int
    top: int
    right: int
    bottom: int


MAX_ATOMS_PER_DIGIT = 3  # a digit drawn in up to three separate strokes side by side (a broken 0, an open 4)
MAX_DIGITS_PER_ATOM = 4  # touching digits: at most four joined in one stroke
MIN_DIGIT_WIDTH = 0.55  # a split is only proposed if each piece would be at least this wide (share of height)
MAX_GAP = 0.2  # strokes of one digit are at most this far apart (share of the digit's height)


def _piece(ink: np.ndarray, mask: np.ndarray, scale: float) -> Piece | None:
    input28 = normalize_ink(ink, mask)
    if input28 is None:
        return None
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return Piece(input28, tuple(int(round(v * scale)) for v in box))


def segment_digits(gray: np.ndarray, scale: float = 1.0, max_marks: int | None = None) -> tuple[int, list[Candidate]]:
    """Candidate readings of a number written side by side; returns (number of atoms, candidates).

    Atoms are strokes grouped by horizontal overlap (the detached bar of a 5 joins its body). A digit may
    still be several atoms (a 0 drawn in two arcs) and an atom several digits (touching digits), so each
    run of up to three neighbouring atoms that is narrow enough becomes a one-digit candidate, and each atom
    wide enough becomes 2-4 digit candidates split at the columns of least ink. The recognizer scores the
    candidates and keeps the best chain (`Recognizer.read_number`). Boxes are in the caller's pixels (`scale`).
    More than `max_marks` atoms raise TooManyMarks before any of them is read."""
    ink = ink_map(gray)
    atoms = _atoms(ink, max_marks)
    if not atoms:
        return 0, []
    typical_height = float(np.median([a.bottom - a.top for a in atoms]))
    candidates = []
    for start in range(len(atoms)):
        candidates += _merged_candidates(ink, atoms, start, typical_height, scale)
        candidates += _split_candidates(ink, atoms[start], start, typical_height, scale)
    return len(atoms), candidates


def _atoms(ink: np.ndarray, max_marks: int | None = None) -> list[Atom]:
    """The ink's significant strokes grouped by horizontal overlap, left to right; [] for a blank image."""
    labels, slices, areas = _significant_components(ink > 0.25)
    if near_blank(int(areas.sum()), ink.size):
        return []
    boxes = [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices]
    grouped = _group_columns(boxes)
    largest = max(sum(areas[i] for i in g) for g in grouped)
    # A stray dot or tick beside the number, under a tenth of the largest mark, is not a digit.
    grouped = [group for group in grouped if sum(areas[i] for i in group) >= 0.1 * largest]
    if max_marks is not None and len(grouped) > max_marks:
        raise TooManyMarks(f"the image holds {len(grouped)} separate marks; a number is read from at most "
                           f"{max_marks}: send fewer digits at a time")
    atoms = []
    for group in grouped:
        atom_mask = np.zeros(labels.shape, bool)
        for i in group:
            atom_mask[slices[i]] |= labels[slices[i]] == i + 1
        atoms.append(Atom(atom_mask, min(boxes[i][0] for i in group), min(boxes[i][1] for i in group),
                          max(boxes[i][2] for i in group), max(boxes[i][3] for i in group)))
    return atoms


def _merged_candidates(ink: np.ndarray, atoms: list[Atom], start: int, typical_height: float,
                       scale: float) -> list[Candidate]:
    """One-digit readings of the atoms from `start` on: that atom alone, and with up to two neighbours."""
    candidates = []
    for stop in range(start + 1, min(start + MAX_ATOMS_PER_DIGIT, len(atoms)) + 1):
        run = atoms[start:stop]
        left, right = run[0].left, run[-1].right
        height = max(max(a.bottom for a in run) - min(a.top for a in run), typical_height)
        if stop - start > 1 and (right - left > 1.1 * height or run[-1].left - run[-2].right > MAX_GAP * height):
            break  # too wide, or too far apart, to be one digit
        run_mask = run[0].mask if len(run) == 1 else np.logical_or.reduce([a.mask for a in run])
        piece = _piece(ink, run_mask, scale)
        if piece is not None:
            candidates.append(Candidate(start, stop, [piece]))
    return candidates


def _split_candidates(ink: np.ndarray, atom: Atom, index: int, typical_height: float,
                      scale: float) -> list[Candidate]:
    """Readings of one atom as 2-4 touching digits, split along the paths of least ink."""
    width, height = atom.right - atom.left, max(atom.bottom - atom.top, typical_height)
    box = (slice(atom.top, atom.bottom), slice(atom.left, atom.right))
    atom_box = atom.mask[box]
    columns = np.arange(width)[None, :]
    candidates = []
    for count in range(2, MAX_DIGITS_PER_ATOM + 1):
        if width < MIN_DIGIT_WIDTH * count * height:
            break  # too narrow for this many digits side by side
        bounds = _cut_paths(atom_box, count)
        pieces = []
        for left, right in zip(bounds[:-1], bounds[1:]):
            part = np.zeros(atom.mask.shape, bool)
            part[box] = atom_box & (columns >= left[:, None]) & (columns < right[:, None])
            pieces.append(_piece(ink, part, scale))
        if len(pieces) == count and all(pieces):
            candidates.append(Candidate(index, index + 1, pieces))
    return candidates
