"""Every code block of the dataset card runs as written: where the card is, and after a push.

There is no Hub here. "After a push" is a copy of exactly the files a push selects (huggingface_hub's
own pattern filter over our patterns), with the pushed card's repo references (the repo id, its
resolve URL, its hf:// path) pointed at that copy; every other character of each block is run as
the card has it. The install line of the shell block needs the network: it is checked to be a valid
requirement naming the project; the rest of the block runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from huggingface_hub.utils import filter_repo_objects
from packaging.requirements import Requirement

from builder.publish import layout
from builder.publish.card import PROJECT_URL
from builder.publish.hub import NEVER, UPLOAD, push

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
REPO = "me/tags"


def blocks(card: str, lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(card) if kind == lang]


def run(cmd: list[str], cwd: Path, tmp: Path) -> str:
    env = dict(os.environ, HF_HOME=str(tmp / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd[:2]} in {cwd} failed:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def first_record(out: Path) -> dict:
    return next(iter(layout.iter_records(out))).to_json()


def check_python_blocks(card: str, cwd: Path, tmp: Path, expected: dict) -> None:
    code = blocks(card, "python")
    assert len(code) == 3, "the card's python blocks changed: update this test"
    hf_out = run([sys.executable, "-c", code[0]], cwd, tmp)  # datasets, HF parquet layout
    assert hf_out.strip().endswith(str(expected["labels"])), hf_out
    wds_out = run([sys.executable, "-c", code[1]], cwd, tmp)  # webdataset
    assert wds_out.startswith(expected["key"] + " "), wds_out
    run([sys.executable, "-c", code[2]], cwd, tmp)  # datasets' webdataset loader


def check_shell_block(card: str, cwd: Path, tmp: Path) -> None:
    (shell,) = blocks(card, "bash")
    install, *rest = shell.strip().splitlines()
    assert install.startswith("pip install ")
    requirement = Requirement(install.removeprefix("pip install ").strip("'"))
    assert requirement.name == "tagllm" and requirement.url == f"git+{PROJECT_URL}"
    out = run(["bash", "-euc", "\n".join(rest)], cwd, tmp)
    assert "output: " in out and "images 12: ok 12" in out


def test_every_block_of_the_local_card_runs_where_the_card_is(build, tmp_path):
    out = build().out
    card = (out / layout.CARD).read_text()
    check_python_blocks(card, out, tmp_path, first_record(out))
    check_shell_block(card, out, tmp_path)


def test_every_block_of_the_pushed_card_runs_against_what_was_pushed(build, tmp_path):
    out = build().out

    class Api:  # stands in for HfApi: keeps what upload_folder would send
        def create_repo(self, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            self.patterns = kwargs["allow_patterns"], kwargs["ignore_patterns"]
            return "https://huggingface.co/datasets/me/tags/commit/1"

    api = Api()
    push(out, REPO, allow_simulated=True, api=api)
    assert api.patterns == (UPLOAD, NEVER)
    files = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()]
    repo = tmp_path / "tags"  # beside the build, so recipe.yaml's relative source path still reaches the photos
    for name in filter_repo_objects(files, allow_patterns=UPLOAD, ignore_patterns=NEVER):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / name, repo / name)
    card = (repo / layout.CARD).read_text()
    pointers = {f"https://huggingface.co/datasets/{REPO}/resolve/main/": f"{repo}/",
                f"hf://datasets/{REPO}/": f"{repo}/", f'"{REPO}"': f'"{repo}"'}
    for remote, local in pointers.items():
        assert remote in card, f"the pushed card no longer names {remote}"
        card = card.replace(remote, local)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check_python_blocks(card, elsewhere, tmp_path, first_record(out))
    check_shell_block(card, repo, tmp_path)
