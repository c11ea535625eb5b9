"""A user's own classification tasks, as Google's run_classifier.py users write them: a DataProcessor
with the four methods (get_train_examples, get_dev_examples, get_test_examples, get_labels),
registered under a --task_name.

    # my_tasks.py
    from bert_core.tasks import DataProcessor, InputExample, register

    @register("movie_reviews")
    class MovieReviews(DataProcessor):
        def get_train_examples(self, data_dir): ...   # -> [InputExample(guid, text_a, text_b, label)]
        def get_dev_examples(self, data_dir): ...
        def get_test_examples(self, data_dir): ...
        def get_labels(self): return ["neg", "pos"]

    bert finetune --task_module=my_tasks.py --task_name=movie_reviews --data_dir=... --do_train ...
    bert evaluate --task_module=my_tasks.py --task_name=movie_reviews --data_dir=... --predictions_file=...

`--task_module` is a Python file, an importable module name (`my_pkg.tasks`), or a file in object
storage (`gs://b/my_tasks.py`, `s3://...`, read through bert_core.storage). An installed package can
also offer tasks without the flag, by an entry point in the group `bert_kubeflow.tasks`
(`movie_reviews = "my_pkg.tasks:MovieReviews"`; its name is the --task_name).

A registered processor is read through `ProcessorTask`, a bert_core.data.glue.Task, so fine-tuning,
prediction and evaluation treat it as they treat the GLUE tasks: splits train, dev and test, its
labels, accuracy as the metric. What goes wrong in a user's module (no file, nothing registered, a
processor without the four methods, a method that raises or returns something else than examples with
its labels) is one UserError line naming the module, the processor and the method.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile

from bert_core import storage
from bert_core.data import glue
from bert_core.data.glue import InputExample
from bert_core.errors import UserError

__all__ = ["DataProcessor", "InputExample", "register", "get_task", "load_task_module", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "bert_kubeflow.tasks"
METHODS = ("get_train_examples", "get_dev_examples", "get_test_examples", "get_labels")
SPLIT_METHODS = {"train": "get_train_examples", "dev": "get_dev_examples", "test": "get_test_examples"}

#: {task name (lower case): processor class}, filled by `register`.
_REGISTRY: dict[str, type] = {}


class DataProcessor:
    """Base class of a user's task, as Google's: override the four methods. `_read_tsv` reads a
    tab-separated file (local or object storage) into rows of strings, as Google's helper does."""

    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        raise NotImplementedError

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        raise NotImplementedError

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        raise NotImplementedError

    def get_labels(self) -> list[str]:
        raise NotImplementedError

    @classmethod
    def _read_tsv(cls, input_file: str, quotechar: str | None = None) -> list[list[str]]:
        text = storage.read_text(input_file)
        quoting = csv.QUOTE_MINIMAL if quotechar else csv.QUOTE_NONE
        rows = csv.reader(text.splitlines(), delimiter="\t", quotechar=quotechar or '"', quoting=quoting)
        return [row for row in rows if row]  # blank lines are no rows


def _source(processor: type) -> str:
    module = sys.modules.get(processor.__module__)
    return getattr(module, "__file__", None) or processor.__module__


def register(name: str):
    """Class decorator: `@register("my_task")` makes the processor `--task_name=my_task`."""

    def add(processor: type) -> type:
        key = name.lower()
        where = f"{_source(processor)}: {getattr(processor, '__name__', processor)!r}"
        if not isinstance(processor, type):
            raise UserError(f"{where}: register({name!r}) takes a DataProcessor class")
        missing = [m for m in METHODS if not callable(getattr(processor, m, None))]
        if missing:
            raise UserError(f"{where} is not a DataProcessor: it has no {', '.join(missing)} "
                            f"(needs {', '.join(METHODS)})")
        if _built_in(key):
            raise UserError(f"{where}: task name {name!r} is a built-in task; register it under another name")
        old = _REGISTRY.get(key)
        if old is not None and (old.__qualname__, _source(old)) != (processor.__qualname__, _source(processor)):
            raise UserError(f"{where}: task {name!r} is registered already by {_source(old)}")
        _REGISTRY[key] = processor
        return processor

    return add


def _built_in(key: str) -> bool:
    """Whether --task_name=key already means a built-in task (GLUE's with their aliases, tsv, SQuAD)."""
    from bert_core.config import SQUAD_TASKS

    if key in glue.TASK_NAMES + SQUAD_TASKS:
        return True
    try:
        glue.get_task(key)
    except UserError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Loading a --task_module, or an entry point
# --------------------------------------------------------------------------------------------------
def load_task_module(spec: str) -> list[str]:
    """Import a --task_module (a .py file, local or in object storage, or a module name); returns the
    task names it registered (one UserError line when none, or when it cannot be read or run)."""
    before = dict(_REGISTRY)
    _REGISTRY.clear()
    try:
        if storage.is_remote(spec):
            if not storage.exists(spec):
                raise UserError(f"--task_module={spec}: no such file")
            _import_file(spec, _local_copy(spec))
        elif spec.endswith(".py") or os.sep in spec or os.path.exists(spec):
            if not os.path.isfile(spec):
                raise UserError(f"--task_module={spec}: no such file")
            _import_file(spec, spec)
        else:
            _import_module(spec)
        names = sorted(_REGISTRY)
    finally:
        loaded = dict(_REGISTRY)
        _REGISTRY.clear()
        _REGISTRY.update(before)
        _REGISTRY.update(loaded)
    if not names:
        raise UserError(f"--task_module={spec}: registers no task (decorate a DataProcessor subclass with "
                        f"@bert_core.tasks.register(\"name\"))")
    return names


def _local_copy(uri: str) -> str:
    """An object-storage module as a local file (named by its URI's hash: two URIs never collide)."""
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"bert_task_module_{digest}_{os.path.basename(uri)}")
    storage.write_bytes(path, storage.read_bytes(uri))
    return path


def _import_file(spec: str, path: str) -> None:
    name = "bert_task_module_" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"--task_module={spec}: not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    _run_user_code(spec, lambda: loader_spec.loader.exec_module(module))


def _import_module(spec: str) -> None:
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(f"--task_module={spec}: no such file or importable module")
    if spec in sys.modules:  # imported before: its register() calls ran then
        _run_user_code(spec, lambda: importlib.reload(sys.modules[spec]))
    else:
        _run_user_code(spec, lambda: importlib.import_module(spec))


def _run_user_code(spec: str, call):
    try:
        return call()
    except UserError:
        raise
    except Exception as err:  # the user's module: its own error, in one line
        raise UserError(f"--task_module={spec}: importing it failed: {_said(err)}") from None


def _said(err: Exception) -> str:
    """A user's exception as one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _entry_points():
    from importlib.metadata import entry_points

    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def entry_point_names() -> tuple[str, ...]:
    """Task names installed packages offer (without importing them)."""
    return tuple(sorted(_entry_points()))


def _processor(name: str, task_module: str | None) -> type | None:
    """The processor class of task `name`: from --task_module, or an installed entry point."""
    key = name.lower()
    if task_module:
        names = load_task_module(task_module)
        if key not in names:
            raise UserError(f"--task_name={name}: --task_module={task_module} registers {', '.join(names)}")
        return _REGISTRY[key]
    ep = _entry_points().get(key)
    if ep is None:
        return None
    obj = _run_user_code(f"{ep.value} (entry point {ep.name})", ep.load)
    if isinstance(obj, type):
        register(ep.name)(obj)
    elif key not in _REGISTRY:  # a module: its register() calls ran when it was imported
        raise UserError(f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}): names neither a "
                        f"DataProcessor class nor a module that registers {ep.name!r}")
    return _REGISTRY[key]


def get_task(name: str, task_module: str | None = None, **options) -> glue.Task:
    """The task `--task_name` names: a registered processor (from --task_module or an entry point),
    else a built-in GLUE/tsv task (bert_core.data.glue.get_task with its options)."""
    processor = _processor(name, task_module) if name.lower() not in glue.TASK_NAMES else None
    if processor is None:
        return glue.get_task(name, **options)
    return ProcessorTask(name.lower(), processor, task_module or f"entry point {name}")


# --------------------------------------------------------------------------------------------------
# A processor as a task the stages read
# --------------------------------------------------------------------------------------------------
class ProcessorTask(glue.Task):
    """A user's DataProcessor as a glue.Task: its splits are train, dev and test (each one method),
    its labels get_labels()'s. Examples are checked as they come: a list of InputExample-like objects
    (guid, text_a, text_b, label) with text, and labels of the task (test examples may have none)."""

    dev_splits = ("dev",)
    test_splits = ("test",)

    def __init__(self, name: str, processor: type, source: str):
        self.name = name
        self.source = source
        self.where = f"{source}: {processor.__name__}"
        try:
            self.processor = processor()
        except Exception as err:
            raise UserError(f"{self.where}(): {_said(err)} (a processor is built without arguments)") from None
        labels = self._call("get_labels")
        if (not isinstance(labels, (list, tuple)) or len(labels) < 2
                or not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels)):
            raise UserError(f"{self.where}.get_labels() returned {labels!r}; expected a list of at least 2 "
                            f"distinct label strings")
        self.labels = list(labels)

    def files(self):
        return {split: (method, None) for split, method in SPLIT_METHODS.items()}

    def path(self, data_dir: str, split: str) -> str:
        if split not in SPLIT_METHODS:
            raise UserError(f"task {self.name}: no split {split!r}; expected one of {list(SPLIT_METHODS)}")
        return f"{self.where}.{SPLIT_METHODS[split]}({data_dir!r})"

    def _call(self, method: str, *args):
        try:
            return getattr(self.processor, method)(*args)
        except UserError:
            raise
        except Exception as err:
            call = f"{self.where}.{method}({', '.join(repr(a) for a in args)})"
            raise UserError(f"{call} failed: {_said(err)}") from None

    def get_examples(self, data_dir: str, split: str) -> list[InputExample]:
        call = self.path(data_dir, split)
        got = self._call(SPLIT_METHODS[split], data_dir)
        if not isinstance(got, (list, tuple)) and not hasattr(got, "__iter__"):
            raise UserError(f"{call} returned {type(got).__name__}; expected a list of InputExample")
        examples = []
        for i, e in enumerate(got):
            text_a, text_b, label = (getattr(e, k, None) for k in ("text_a", "text_b", "label"))
            if not isinstance(text_a, str) or not (text_b is None or isinstance(text_b, str)):
                raise UserError(f"{call}: example {i} ({e!r}) needs text_a (and text_b, if any) as strings")
            if label is not None and label not in self.labels:
                if split == "test":
                    label = None  # Google's processors give test examples a placeholder label
                else:
                    raise UserError(f"{call}: example {i} (guid {getattr(e, 'guid', None)!r}): label {label!r} "
                                    f"is not one of get_labels() {self.labels}")
            examples.append(InputExample(guid=str(getattr(e, "guid", f"{split}-{i}")), text_a=text_a,
                                         text_b=text_b, label=label))
        return examples
