"""Data set discovery: which images, which labels, which split. No torch.

Three layouts are accepted (checked in this order, except that ``ROOT/index.csv`` wins over split folders beside
it); ``LabeledData.notes`` holds one line naming the layout chosen, for every command to print:

1. split ImageFolder: ``ROOT/{train,val,test}/<class>/**/*.jpg``
2. index CSV: ``ROOT.csv`` or ``ROOT/index.csv`` (or ``ROOT/splits.csv``) with columns
   ``path,label,split`` and optionally ``group`` (or the column named by ``group_column``, e.g. HAM10000's
   ``lesion_id``: the patient or lesion id; a group's images may
   not sit in two splits); paths are relative to the CSV's folder and may not escape it
3. flat ImageFolder: ``ROOT/<class>/**/*.jpg``: a seeded stratified 64/16/20 % split is
   made and written to ``ROOT/splits.csv`` (an index CSV) so later commands see the same
   split even if files are added; if ROOT is read-only the split is recomputed identically.

Class names come from the data (sorted folder names / label values), never from code: two or more. A class
with a single image is kept but named in ``LabeledData.warnings`` (with the closest other name: likely a typo).
The malignancy group (``--malignant a,b``; for two classes the positive class) is resolved here too.
"""

from __future__ import annotations

import csv
import difflib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text
from ..errors import DataError
from .attributes import INDEX_COLUMNS
from .images import IMAGE_EXTENSIONS
from .inputs import list_images

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.64, 0.16, 0.20)
SPLIT_FILE = "splits.csv"
INDEX_FILES = ("index.csv", SPLIT_FILE)
GROUP_COLUMN = "group"
DEFAULT_POSITIVE = "malignant"
MAX_REPORTED_ROWS = 20  # bad index rows listed in one error; the count says how many more


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    group: str | None = None  # patient/lesion id from an index CSV's optional `group` column
    # the index CSV's other columns (sex, age, site...), for `test --by`; see data/attributes.py
    attributes: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class LabeledData:
    root: Path
    layout: str
    classes: tuple[str, ...]
    positive_index: int | None  # two classes: the positive (malignant) one; None for more
    splits: dict[str, list[Sample]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    malignant: tuple[int, ...] = ()  # the malignancy group (class indices, sorted); () when not named (K > 2)
    warnings: list[str] = field(default_factory=list)  # e.g. a class of one image (a label typo?)
    exclusions: dict[str, Any] | None = None  # what exclusions.apply_exclusions left out (recorded with a run)

    @property
    def positive_class(self) -> str:
        if self.positive_index is None:
            raise DataError(f"the data has {len(self.classes)} classes {list(self.classes)}: there is no single "
                            "positive class (see --malignant)")
        return self.classes[self.positive_index]

    def malignant_group(self) -> tuple[int, ...]:
        """The malignancy group's class indices, or the error that more than two classes need ``--malignant``."""
        if not self.malignant:
            raise DataError(f"{self.root}: the data has {len(self.classes)} classes {list(self.classes)}: name the "
                            "malignant ones with --malignant CLASS[,CLASS...] (the malignancy score sums their "
                            "probabilities)")
        return self.malignant

    def missing_classes(self, splits: Sequence[str]) -> list[str]:
        """Classes with no image in any of ``splits`` (together)."""
        present = {s.label for name in splits for s in self.splits.get(name, [])}
        return [c for i, c in enumerate(self.classes) if i not in present]

    def split(self, name: str) -> list[Sample]:
        samples = self.splits.get(name)
        if not samples:
            raise DataError(f"{self.root}: the '{name}' split is missing or empty ({self.layout} layout)")
        return samples

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: {c: sum(1 for s in samples if s.label == i) for i, c in enumerate(self.classes)}
                for name, samples in self.splits.items()}


def discover(root: str | os.PathLike[str], *, positive_class: str | None = None, seed: int = 0,
             write_split_file: bool = True, malignant: str | Sequence[str] | None = None,
             group_column: str = GROUP_COLUMN) -> LabeledData:
    """Find images, labels and splits under ``root`` (a folder or an index CSV).

    ``malignant``: the malignancy group's class names (a list or ``"a,b"``); for two classes it is the positive
    class (``positive_class`` says the same; giving both, they must agree). ``group_column``: the index CSV's
    column of patient or lesion ids (another name than ``group`` must exist, and needs an index CSV)."""
    root = existing_data(root)
    group = {"positive_class": positive_class, "malignant": malignant}
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DataError(f"{root}: expected a folder or an index CSV (path,label,split)")
        return _finish(*_from_index_csv(root, group_column), **group)
    explicit = (root / INDEX_FILES[0]).is_file()  # a user's index.csv wins over split folders beside it
    present = [s for s in SPLITS if (root / s).is_dir()]
    if present and not explicit:
        _no_group_column(root, group_column)
        return _finish(root, "split-imagefolder", *_from_split_folders(root, present), **group)
    for name in INDEX_FILES:
        if (root / name).is_file():
            base, layout, classes, splits, notes = _from_index_csv(root / name, group_column)
            wins = [f"{name} wins over the split folders {present}"] if present else []
            return _finish(base, layout, classes, splits, wins + notes, **group)
    _no_group_column(root, group_column)
    return _finish(root, "flat-imagefolder", *_from_flat_folder(root, seed, write_split_file), **group)


def _no_group_column(root: Path, group_column: str) -> None:
    if group_column != GROUP_COLUMN:
        raise DataError(f"--group-column {group_column}: {root} is an image folder, not an index CSV with that "
                        "column")


def existing_data(root: str | os.PathLike[str]) -> Path:
    """``root``, or the error that it is missing (commands ask before their heavy imports)."""
    if not Path(root).exists():
        raise DataError(f"data path not found: {root}")
    return Path(root)


def parse_class_list(value: str | Sequence[str] | None) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (empty items dropped)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [v.strip() for v in items if v.strip()]


def malignant_indices(classes: Sequence[str], malignant: str | Sequence[str] | None,
                      positive_class: str | None = None) -> tuple[int, ...]:
    """The malignancy group as sorted class indices; () for K > 2 classes when none is named.

    Two classes: the positive class (``positive_class``, ``malignant`` or the default ``malignant``/second class).
    An unknown name, all classes, or (for two classes) a group other than the positive class is a DataError."""
    names = parse_class_list(malignant)
    unknown = [n for n in names if n not in classes]
    if unknown:
        raise DataError(f"--malignant: {', '.join(repr(n) for n in unknown)} is not one of the data's classes "
                        f"{list(classes)}")
    if names and set(names) == set(classes):
        raise DataError(f"--malignant names every class {list(classes)}: at least one class must be benign")
    if len(classes) == 2:
        if names and positive_class and names != [positive_class]:
            raise DataError(f"--malignant {','.join(names)} and --positive-class {positive_class} disagree: give one")
        wanted = positive_class or (names[0] if names else
                                    DEFAULT_POSITIVE if DEFAULT_POSITIVE in classes else classes[1])
        if wanted not in classes:
            raise DataError(f"positive class '{wanted}' is not one of the data's classes {list(classes)}")
        return (list(classes).index(wanted),)
    if positive_class:
        raise DataError(f"--positive-class is for two classes; with {len(classes)} classes name the malignancy "
                        "group with --malignant")
    return tuple(sorted({list(classes).index(n) for n in names}))


def _singleton_warnings(classes: list[str], splits: dict[str, list[tuple]]) -> list[str]:
    """A class of one image among larger ones is most often a label typo: name it and the closest class."""
    counts = {c: 0 for c in classes}
    for items in splits.values():
        for item in items:
            counts[item[1]] += 1
    out = []
    for cls in classes:
        if counts[cls] == 1 and max(counts.values()) > 1:
            close = difflib.get_close_matches(cls, [c for c in classes if c != cls], n=1, cutoff=0.6)
            hint = f" (a typo of '{close[0]}'?)" if close else ""
            out.append(f"class '{cls}' has a single image{hint}: it is trained as a class of its own; fix the label "
                       "or remove the image if it is a mistake")
    return out


def _finish(root: Path, layout: str, classes: list[str], splits: dict[str, list[tuple]],
            notes: list[str] | None = None, *, positive_class: str | None,
            malignant: str | Sequence[str] | None = None) -> LabeledData:
    if len(classes) < 2:
        raise DataError(f"{root}: found a single class {classes}; two are needed (e.g. benign and malignant)")
    group = malignant_indices(classes, malignant, positive_class)
    index = {c: i for i, c in enumerate(classes)}
    built = {name: [Sample(item[0], index[item[1]], *item[2:]) for item in items] for name, items in splits.items()}
    chosen = f"data {root}: {layout} layout" + (f" ({'; '.join(notes)})" if notes else "")
    return LabeledData(root=root, layout=layout, classes=tuple(classes),
                       positive_index=group[0] if len(classes) == 2 else None, splits=built, notes=[chosen],
                       malignant=group, warnings=_singleton_warnings(classes, splits))


def _class_folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _from_split_folders(root: Path, present: list[str]
                        ) -> tuple[list[str], dict[str, list[tuple[Path, str]]], list[str]]:
    missing = [s for s in ("train", "val") if s not in present]
    notes = []
    if missing:
        notes.append(f"missing split folder(s): {', '.join(missing)}")
    classes = _class_folders(root / present[0])
    splits: dict[str, list[tuple[Path, str]]] = {}
    for split in present:
        found = _class_folders(root / split)
        if found != classes:
            raise DataError(f"{root}: class folders differ between splits: {present[0]}/ has {classes}, "
                            f"{split}/ has {found}")
        items = []
        for cls in classes:
            images = list_images(root / split / cls)
            if not images:
                raise DataError(f"{root / split / cls}: class folder has no images "
                                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
            items.extend((p, cls) for p in images)
        splits[split] = items
    # A missing split is not fatal here: `test` needs only test/; training asks for train/val.
    return classes, splits, notes


def _from_flat_folder(root: Path, seed: int, write_split_file: bool
                      ) -> tuple[list[str], dict[str, list[tuple[Path, str]]], list[str]]:
    classes = _class_folders(root)
    if not classes:
        raise DataError(f"{root}: no class folders, split folders (train/val/test) or index CSV found")
    by_class: dict[str, list[Path]] = {}
    for cls in classes:
        images = list_images(root / cls)
        if not images:
            raise DataError(f"{root / cls}: class folder has no images")
        by_class[cls] = images
    assignment = stratified_split(by_class, seed=seed)
    notes = [f"no split folders: made a seeded stratified {'/'.join(str(int(f * 100)) for f in SPLIT_FRACTIONS)} % "
             f"split (seed {seed})"]
    if write_split_file:
        target = root / SPLIT_FILE
        try:
            write_index_csv(target, root, ((p, c, s) for s, items in assignment.items() for p, c in items))
            notes.append(f"split written to {target}; later commands read it")
        except OSError:
            notes.append(f"{root} is read-only: split not saved (it is recomputed identically from the seed)")
        except DataError as exc:
            notes.append(f"split not saved: {exc.message}")
    return classes, assignment, notes


def stratified_split(by_class: dict[str, list[Path]], *, seed: int,
                     fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, list[tuple[Path, str]]]:
    """Seeded per-class split; each class keeps the train/val/test proportions."""
    out: dict[str, list[tuple[Path, str]]] = {s: [] for s in SPLITS}
    for class_id, (cls, paths) in enumerate(sorted(by_class.items())):
        ordered = sorted(paths)
        order = np.random.default_rng([seed, class_id]).permutation(len(ordered))
        n = len(ordered)
        n_test = round(n * fractions[2])
        n_val = round(n * fractions[1])
        for rank, idx in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out[split].append((ordered[idx], cls))
    return {s: sorted(items) for s, items in out.items()}


def write_index_csv(target: Path, base: Path, rows: Iterable[tuple[Path, str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    writer.writerows([Path(os.path.relpath(path, base)).as_posix(), label, split] for path, label, split in rows)
    write_text(target, buf.getvalue())


TRUE_VALUES = frozenset({"1", "true", "yes", "y", "x"})
FALSE_VALUES = frozenset({"", "0", "false", "no", "n"})


def exclude_flag(value: str, where: str) -> bool:
    """An index CSV's ``exclude`` cell: 1/true/yes/y/x leave the row out, empty/0/false/no/n keep it."""
    text = value.strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    raise DataError(f"{where}: exclude value '{value}' is not one of 1/true/yes/x or empty/0/false/no")


def _from_index_csv(csv_path: Path, group_column: str = GROUP_COLUMN
                    ) -> tuple[Path, str, list[str], dict[str, list[tuple]], list[str]]:
    base = csv_path.parent.resolve()
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in ("path", "label", "split") if c not in columns]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {missing}; expected a header 'path,label,split'")
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
            grouped = group_column in columns
            if group_column != GROUP_COLUMN and not grouped:
                raise DataError(f"{csv_path}: --group-column {group_column}: no such column (columns: "
                                f"{', '.join(columns)})")
            excludable = "exclude" in columns  # a row marked 1/true/yes/x is left out (e.g. after `audit`)
            extra = [c for c in columns if c not in INDEX_COLUMNS]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read index CSV ({exc})") from None
    splits: dict[str, list[tuple]] = {}
    first_line: dict[Path, int] = {}
    label_lines: dict[str, list[int]] = {}
    problems: list[str] = []  # every bad row, reported together with its line number
    name = csv_path.name
    excluded, left_out = 0, set()
    for line_no, row in enumerate(rows, start=2):
        rel, label, split = row["path"], row["label"], row["split"]
        if excludable and exclude_flag(row.get("exclude", ""), f"{name}:{line_no}"):
            excluded += 1
            if rel and not Path(rel).is_absolute():
                left_out.add((base / rel).resolve())  # listed, and left out: not "unlisted"
            continue
        if not rel or not label:
            problems.append(f"{name}:{line_no}: empty path or label")
            continue
        label_lines.setdefault(label, []).append(line_no)
        if split not in SPLITS:
            problems.append(f"{name}:{line_no}: split '{split}' is not one of {list(SPLITS)}")
            continue
        group = row.get(group_column, "") if grouped else None
        if grouped and not group:
            problems.append(f"{name}:{line_no}: empty group id; with a '{group_column}' column every row needs one "
                            "(the patient or lesion id; a unique value for an image on its own)")
            continue
        if Path(rel).is_absolute() or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
            problems.append(f"{name}:{line_no}: absolute path '{rel}' refused; paths must be relative to the CSV")
            continue
        resolved = (base / rel).resolve()
        if not resolved.is_relative_to(base):
            problems.append(f"{name}:{line_no}: path '{rel}' escapes the data root {base}; refused")
            continue
        if resolved in first_line:
            problems.append(f"{name}:{line_no}: duplicate path '{rel}' (first on line {first_line[resolved]})")
            continue
        first_line[resolved] = line_no
        if not resolved.is_file():
            problems.append(f"{name}:{line_no}: listed file not found '{rel}'")
            continue
        # the path checked is the path opened
        splits.setdefault(split, []).append((resolved, label, group, {c: row.get(c, "") for c in extra}))
    if problems:
        labels = sorted(label_lines)
        # a label on one line among larger ones is the likely typo: while the file is being fixed, point at it
        lone = [lbl for lbl in labels if len(label_lines[lbl]) == 1 and len(labels) > 2]
        for label in lone:
            close = difflib.get_close_matches(label, [c for c in labels if c != label], n=1, cutoff=0.6)
            problems.append(f"{name}:{label_lines[label][0]}: label '{label}' appears only here"
                            + (f" (a typo of '{close[0]}'?)" if close else ""))
        problems.sort(key=lambda text: int(text.split(":")[1]))
        head = f"{csv_path}: found {len(labels)} label(s) {labels}; " if lone else f"{csv_path}: "
        more = f"; ... and {len(problems) - MAX_REPORTED_ROWS} more" if len(problems) > MAX_REPORTED_ROWS else ""
        raise DataError(f"{head}{len(problems)} bad row(s): {'; '.join(problems[:MAX_REPORTED_ROWS])}{more}")
    if not splits:
        raise DataError(f"{csv_path}: no rows")
    if grouped:
        _refuse_split_groups(csv_path, splits)
    classes = sorted({item[1] for items in splits.values() for item in items})
    notes = [f"{excluded} row(s) with exclude set in {name} left out"] if excluded else []
    notes += unlisted_note(base, set(first_line) | left_out, name)
    return base, "index-csv", classes, splits, notes


def unlisted_note(base: Path, listed: set[Path], name: str) -> list[str]:
    """A note when image files in split folders beside the CSV (``train/``, ``val/``, ``test/``) are not in the
    CSV, and so not used: the CSV wins over the folders, and a file added to a folder later is easy to miss."""
    folders = [s for s in SPLITS if (base / s).is_dir()]
    unlisted = [p for s in folders for p in list_images(base / s) if p.resolve() not in listed]
    if not unlisted:
        return []
    shown = ", ".join(p.relative_to(base).as_posix() for p in unlisted[:3])
    more = f" and {len(unlisted) - 3} more" if len(unlisted) > 3 else ""
    return [f"{len(unlisted)} image file(s) in the split folders {', '.join(f + '/' for f in folders)} are not "
            f"listed in {name} and are not used: {shown}{more}"]


def _refuse_split_groups(csv_path: Path, splits: dict[str, list[tuple]]) -> None:
    """Images of one group (patient, lesion) in two splits would leak it into evaluation."""
    where: dict[str, set[str]] = {}
    for split, items in splits.items():
        for item in items:
            where.setdefault(item[2], set()).add(split)
    leaks = sorted((g, sorted(s)) for g, s in where.items() if len(s) > 1)
    if leaks:
        shown = "; ".join(f"'{g}' in {'/'.join(s)}" for g, s in leaks[:3])
        more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
        raise DataError(f"{csv_path}: {len(leaks)} group(s) have images in more than one split ({shown}{more}); "
                        "a group's images must stay together")
