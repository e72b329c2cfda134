"""Elastic resume: a checkpoint written by N ranks, converted once to DeepSpeed's universal checkpoint
form and loaded by M ranks.

Where the conversion runs: on rank 0 of the new worker group, before any engine exists, in a child
process (``python -m orchestrator.train.universal SRC DST``). It reads every rank's shards, so it needs
about the size of the whole optimizer state in host memory (fp32 weights and both Adam moments:
12 bytes a parameter, plus one parameter's shards at a time while merging) and as much scratch disk
twice over. The result is kept beside the checkpoint (``step-<N>_universal/``, with its own
``COMPLETE.json``), so a later attempt at the same world size does not convert again.

``ds_to_universal`` unpickles the shards: it runs only on a checkpoint of this run's own checkpoint
location that is complete and, on an object store, whose every file matched the digest recorded at
upload; and inside ``weights_only_loading`` even so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import ResumeError
from orchestrator.train.checkpoint import MARKER, UNIVERSAL_SUFFIX, CheckpointInfo


def universal_folder(manager, info: CheckpointInfo) -> tuple[Path, str]:
    """(load dir, tag) of the universal form of ``info`` on this rank, made by rank 0 if need be."""
    import torch.distributed as dist

    tag = info.tag + UNIVERSAL_SUFFIX
    store = manager.store
    failure: list = [None]
    if manager.rank == 0 and not store.exists(f"{tag}/{MARKER}"):
        try:
            _convert(manager, info, tag)
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            failure[0] = f"{type(exc).__name__}: {exc}"
    dist.broadcast_object_list(failure, src=0)
    if failure[0]:
        raise ResumeError(
            f"converting {info.location} to DeepSpeed's universal checkpoint failed: {failure[0]}"
        )
    if not manager.remote:
        return store.local_path(), tag
    from orchestrator.train.checkpoint_manager import download_checkpoint

    record = json.loads(store.read_bytes(f"{tag}/{MARKER}"))
    universal = CheckpointInfo(**{**record, "location": store.child(tag).uri})
    target = manager.scratch / "restore"
    download_checkpoint(store, universal, target / tag)
    return target, tag


def _convert(manager, info: CheckpointInfo, tag: str) -> None:
    from orchestrator.fsutil import file_sha256
    from orchestrator.train.checkpoint_manager import download_checkpoint, marker_payload

    store = manager.store
    if manager.remote:
        work = manager.scratch / "convert"
        shutil.rmtree(work, ignore_errors=True)
        source = download_checkpoint(store, info, work / info.tag)  # every file, each digest checked
        output = work / tag
    else:
        source, output = store.local_path(info.tag), store.local_path(tag)
        shutil.rmtree(output, ignore_errors=True)
    print(
        f"[checkpoint] converting {info.tag} (written by {info.world_size} workers) to DeepSpeed's "
        f"universal checkpoint for {manager.world} workers",
        flush=True,
    )
    run_converter(source, output)
    files = {}
    for path in sorted(p for p in output.rglob("*") if p.is_file()):
        name = path.relative_to(output).as_posix()
        if manager.remote:
            store.upload(path, f"{tag}/{name}")
        files[name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    marker = CheckpointInfo(**{**vars(info), "location": store.child(tag).uri, "files": files})
    store.write_bytes(f"{tag}/{MARKER}", marker_payload(marker))
    if manager.remote:
        shutil.rmtree(manager.scratch / "convert", ignore_errors=True)


def run_converter(source: Path, output: Path) -> None:
    """DeepSpeed's ds_to_universal in a child process that loads weights only."""
    command = [sys.executable, "-m", "orchestrator.train.universal", str(source), str(output)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-6:])
        raise ResumeError(f"ds_to_universal failed on {source}:\n{tail}")


def _main(argv: list[str]) -> int:
    """``python -m orchestrator.train.universal SRC DST``: ds_to_universal, weights only."""
    import argparse
    import os

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.checkpoint import ds_to_universal

    from orchestrator.train.safe_load import weights_only_loading

    source, output = argv
    # Plain nn.Module checkpoints of ZeRO-1/2 lack the state the converter expects unless injected.
    args = argparse.Namespace(
        input_folder=source,
        output_folder=output,
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,
    )
    with weights_only_loading():
        ds_to_universal.main(args)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
