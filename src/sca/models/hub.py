"""Where a model's files are: a local folder, or a Hugging Face hub id with an optional revision.

Every place that names a model (`--model`, `model.path`, `--sam`, `--captioner`, `from_pretrained`) takes either.
A hub id is `org/name` or `org/name@revision`; it is resolved through `huggingface_hub` and its cache, so
`HF_HUB_OFFLINE=1`, `HF_HUB_CACHE`/`HF_HOME` and the token from the environment apply as everywhere else.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

from ..assets import shipped_model
from ..errors import InputError
from .quiet import NOT_SHARDED, dropped

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
SNAPSHOT_FILES = ("*.json", "*.txt", "*.model", "*.tiktoken", "*.jinja", "*.py", "*.safetensors")
"""What a hub model's snapshot brings: configs, tokenizers and processors (in subfolders too), code, weights. A repo
that has no safetensors weights brings its `*.bin` instead, never both."""


LOAD_ERRORS = (OSError, ValueError, TypeError, LookupError, ArithmeticError, AttributeError, ImportError, RuntimeError,
               StrictDataclassError)
"""What transformers raises when a model's files do not make the model: a file missing or unreadable, a config.json
its classes refuse (a field of the wrong type, a sub-config that is not one), weights whose shapes are not the
config's."""
LOAD_REPORT = ("transformers.modeling_utils", "LOAD REPORT")
"""transformers logs a table of the weights that did not load as they should, then raises, for a size mismatch, an
error that points at the table."""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _not_a_number(constant: str):
    """JSON's `parse_constant`: a config's NaN or Infinity is refused when read, not met at the first forward."""
    raise ValueError(f"it holds {constant}, which no setting may be (give a number)")


@dataclass(frozen=True)
class ModelSource:
    """A model named by a local folder (`folder`) or by a hub repository (`repo_id`, `revision`)."""

    name: str
    folder: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, name: str | Path) -> ModelSource:
        """A folder that exists wins; then the name of a model shipped in the package (`sca.assets.SHIPPED_MODELS`);
        else `org/name[@revision]` is a hub id; anything else is a missing folder."""
        text = str(name)
        if Path(text).expanduser().is_dir():
            return cls(text, folder=Path(text).expanduser())
        if Path(text).expanduser().exists():
            raise InputError(f"{text} is a file, not a model folder: pass the folder that holds config.json")
        if (shipped := shipped_model(text)) is not None:
            return cls(text, folder=shipped)
        repo_id, _, revision = text.partition("@")
        if HUB_ID.match(repo_id) and ".." not in repo_id and (not _ or revision):
            return cls(text, repo_id=repo_id, revision=revision or None)
        raise InputError(f"model folder not found: {text} (nor is it a Hugging Face hub id such as org/name)")

    @cached_property
    def location(self) -> str:
        """The folder `from_pretrained` loads from: a hub model is resolved to its snapshot folder first (downloaded
        where there is network, else from the cache), so that every file of it, in subfolders too (InstructBLIP's
        Q-Former tokenizer), is read from that snapshot; transformers would otherwise look a missing subfolder file
        up on its own and fall back silently to another one."""
        if self.folder is not None:
            return str(self.folder)
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        patterns = list(SNAPSHOT_FILES)
        try:
            if not constants.HF_HUB_OFFLINE and not self._has_safetensors():
                patterns.append("*.bin")
            return snapshot_download(self.repo_id, revision=self.revision, allow_patterns=patterns,
                                     local_files_only=constants.HF_HUB_OFFLINE)
        except LocalEntryNotFoundError:
            raise self.unavailable() from None
        except (OSError, ValueError) as error:
            raise self.failure("reach", error) from error

    def _has_safetensors(self) -> bool:
        from huggingface_hub import HfApi

        return any(name.endswith(".safetensors") for name in HfApi().list_repo_files(self.repo_id, revision=self.revision))

    @property
    def pretrained_kwargs(self) -> dict:
        """Loading from the resolved folder: the revision is already chosen."""
        return {}

    def file(self, filename: str, subfolder: str | None = None) -> Path | None:
        """The local path of one of the model's files (downloaded or from the cache); None if the model lacks it.

        Raises `InputError` when a hub model can be reached neither in the cache nor online.
        """
        if self.folder is not None:
            path = self.folder / (subfolder or "") / filename
            return path if path.is_file() else None
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, filename, subfolder=subfolder, revision=self.revision))
        except LocalEntryNotFoundError:
            if self.cached():
                return None  # the snapshot is here; it just has no such file
            raise self.unavailable() from None
        except EntryNotFoundError:
            return None
        except OSError as error:
            raise self.failure("reach", error) from error

    def cached(self) -> bool:
        """Whether a snapshot of this hub model (at this revision) is in the local cache."""
        from huggingface_hub import constants

        repo = Path(constants.HF_HUB_CACHE) / f"models--{self.repo_id.replace('/', '--')}"
        revision = self.revision or "main"
        return (repo / "refs" / revision).is_file() or (repo / "snapshots" / revision).is_dir()

    def unavailable(self) -> InputError:
        from huggingface_hub import constants

        where = "offline (HF_HUB_OFFLINE=1), so only the cache is used" if constants.HF_HUB_OFFLINE else "nor online"
        return InputError(
            f"{self.name} is not a local folder, and no snapshot of the hub model {self.repo_id!r}"
            f"{f' at revision {self.revision!r}' if self.revision else ''} is in the cache ({constants.HF_HUB_CACHE}) "
            f"— {where}: download it where there is network (`hf download {self.repo_id}`) or pass a folder"
        )

    def failure(self, action: str, error: BaseException) -> InputError:
        """A loading error from transformers or the hub, as one line that names the model."""
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        if isinstance(error, InputError):
            return error  # already one line that names the model
        if self.repo_id is not None:
            if isinstance(error, RepositoryNotFoundError):
                return InputError(f"no model {self.repo_id!r} on the Hugging Face hub (or it is private: log in "
                                  "with `hf auth login` or set HF_TOKEN)")
            if isinstance(error, RevisionNotFoundError):
                return InputError(f"the hub model {self.repo_id!r} has no revision {self.revision!r}")
            if isinstance(error, LocalEntryNotFoundError) or not self.cached():
                return self.unavailable()
        if isinstance(error, StrictDataclassError) and error.__cause__ is not None:
            error = error.__cause__  # what the config's field or validator said, without the wrapper's preamble
        detail = " ".join(str(error).split())
        return InputError(f"cannot {action} {self.name}: {detail[:300]}")

    @contextlib.contextmanager
    def loading(self, action: str) -> Iterator[None]:
        """transformers loading this model within the block: what it raises becomes one line that names the model (and
        the first weight whose shape is not its config's); its table of weights that did not load is logged only
        when loading goes on."""
        logger = logging.getLogger(LOAD_REPORT[0])
        reports: list[logging.LogRecord] = []
        own_level, shown = logger.level, logger.getEffectiveLevel()

        def hold(record: logging.LogRecord) -> bool:
            if LOAD_REPORT[1] in record.getMessage():
                reports.append(record)
                return False
            return record.levelno >= shown

        logger.addFilter(hold)
        logger.setLevel(min(shown, logging.WARNING))  # the table is read here even where the CLI silences transformers
        try:
            with dropped(NOT_SHARDED):
                yield
        except LOAD_ERRORS as error:
            mismatch = _first_mismatch(reports)
            if mismatch is not None or "mismatched_sizes" in str(error):
                raise InputError(f"cannot {action} {self.name}: its weights do not fit its config.json"
                                 f"{f' ({mismatch})' if mismatch else ''}: the config was edited, or the weights are "
                                 "another model's") from error
            raise self.failure(action, error) from error
        finally:
            logger.removeFilter(hold)
            logger.setLevel(own_level)
        for record in reports:
            if record.levelno >= shown:
                logger.handle(record)

    def config(self) -> dict | None:
        """Its `config.json` (None without one)."""
        import json

        config_file = self.file("config.json")
        if config_file is None:
            return None
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"), parse_constant=_not_a_number)
        except (OSError, ValueError) as error:
            raise InputError(f"{config_file} of {self.name} is not a readable JSON config: {error}") from None
        if not isinstance(config, dict):
            raise InputError(f"{config_file} of {self.name} is not a JSON config (an object of settings)")
        return config

    def required_config(self) -> dict:
        """Its `config.json`, which a model folder has."""
        config = self.config()
        if config is None:
            raise InputError(f"{self} is not a model folder (no config.json): pass a folder saved by save_pretrained "
                             "or a hub id")
        return config

    def model_type(self) -> str | None:
        """The `model_type` its config.json names (None without one)."""
        return (self.config() or {}).get("model_type")

    def __str__(self) -> str:
        return self.name


def _first_mismatch(reports: list[logging.LogRecord]) -> str | None:
    """The first weight of a size mismatch in transformers' loading table: `name: checkpoint [..], config [..]`."""
    for record in reports:
        for line in ANSI.sub("", record.getMessage()).splitlines():
            cells = [cell.strip() for cell in line.split("|")]
            if len(cells) == 3 and cells[1] == "MISMATCH":
                shapes = re.findall(r"torch\.Size\((\[[^\]]*\])\)", cells[2])
                if len(shapes) == 2:
                    return f"{cells[0]}: checkpoint {shapes[0]}, config {shapes[1]}"
                return f"{cells[0]}: {cells[2]}"
    return None
