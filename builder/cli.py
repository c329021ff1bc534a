"""The `tagllm` command line: each command parses its options, calls one library function, reports."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from builder import __version__
from builder.errors import RunError, UserError

SIM_BANNER = ("SIMULATED ENGINE: labels are the source's human labels plus seeded noise, not model output. "
              "Use them to test the pipeline only.")


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn our errors into one line on stderr and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (UserError, RunError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: finished shards and cached answers are kept; rerun to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tagllm")
def main() -> None:
    """Build multi-label image datasets labeled by multimodal LLMs (the TagLLM method)."""


def _build_overrides(engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None,
                     limit: int | None, out: str | None, formats: tuple[str, ...], strategy: str | None,
                     sets: tuple[str, ...]) -> list[str]:
    overrides = []
    if servers and not engine:
        engine = "http"
    pairs = {"engine.kind": engine, "engine.model": model, "engine.api": api, "source.limit": limit,
             "output.dir": out, "tagging.strategy": strategy}
    overrides += [f"{k}={v}" for k, v in pairs.items() if v is not None]
    if servers:
        overrides.append("engine.servers=" + json.dumps(list(servers)))
    if formats:
        overrides.append("output.formats=" + json.dumps(list(formats)))
    return overrides + list(sets)


def print_summary(result: Any) -> None:
    s = result.stats
    cost = s.get("cost", {})
    reasons = ", ".join(f"{k} {v}" for k, v in s.get("failed_by_reason", {}).items()) or "none"
    click.echo(f"output: {result.out}")
    click.echo(f"images {s['images']}: ok {s['ok']}, failed {s['failed']} ({reasons})")
    click.echo(f"requests/image {cost.get('requests_per_image')}, sent this run {result.sent}, "
               f"shards {result.shards} ({result.skipped_shards} kept from an earlier run)")
    top = list(s.get("label_counts", {}).items())[:8]
    if top:
        click.echo("most frequent labels: " + ", ".join(f"{k} {v}" for k, v in top))
    if result.simulated:
        click.echo(SIM_BANNER)


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--engine", type=click.Choice(["auto", "sglang", "http", "transformers", "simulated"]),
              help="Backend (overrides engine.kind).")
@click.option("--model", help="Model id or local dir (overrides engine.model).")
@click.option("--server", "servers", multiple=True, help="http engine: server URL (repeat to spread load).")
@click.option("--api", type=click.Choice(["http-sglang", "openai", "vllm"]), help="http engine protocol.")
@click.option("--strategy", type=click.Choice(["tagllm", "yes-no", "all-in-one", "open-ended"]))
@click.option("--limit", type=int, help="Tag at most N source items.")
@click.option("--out", help="Output folder (overrides output.dir).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["webdataset", "hf"]),
              help="Output format (repeatable).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@click.option("--overwrite", is_flag=True, help="Delete an earlier build in the output folder and start over.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@handle_errors
def build(recipe: Path, engine: str | None, model: str | None, servers: tuple[str, ...], api: str | None,
          strategy: str | None, limit: int | None, out: str | None, formats: tuple[str, ...],
          sets: tuple[str, ...], overwrite: bool, no_progress: bool) -> None:
    """Build a labeled dataset from RECIPE; rerun the same command to resume.

    \b
    Example:
      tagllm build recipes/coco2014.yaml --engine sglang --model Qwen/Qwen2.5-VL-7B-Instruct
      tagllm build recipes/demo.yaml --limit 10 --out out/try --set tagging.threshold=0.6
    """
    from builder.recipe import load_recipe
    from builder.run import Builder

    loaded = load_recipe(recipe, _build_overrides(engine, model, servers, api, limit, out, formats, strategy, sets))
    builder = Builder(loaded, Path(loaded.recipe.output.dir), overwrite=overwrite, progress=not no_progress)
    if builder.check().simulated:
        click.echo(SIM_BANNER, err=True)
    result = builder.run()
    print_summary(result)


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private/--public", default=True, show_default=True, help="Visibility of a new repo.")
@click.option("--allow-simulated", is_flag=True, help="Publish even though the labels are simulated.")
@handle_errors
def push(out: Path, repo_id: str, private: bool, allow_simulated: bool) -> None:
    """Upload OUT (data, card, recipe, concept sheet) to the Hub dataset REPO_ID.

    \b
    The token comes from HF_TOKEN or `huggingface-cli login`.
    Example:
      tagllm push out/coco2014 my-org/coco2014-tagllm --private
    """
    from builder.hub import push as push_folder

    click.echo(push_folder(out, repo_id, private=private, allow_simulated=allow_simulated))


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", type=click.Path(dir_okay=False, path_type=Path), help="Your own Jinja card template.")
@handle_errors
def card(out: Path, template: Path | None) -> None:
    """Re-render the dataset card OUT/README.md (after eval, or with your own template).

    \b
    Example:
      tagllm card out/demo
    """
    from builder.card import write_card

    click.echo(write_card(out, template))


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
@handle_errors
def inspect(out: Path, as_json: bool) -> None:
    """Summarize a build: counts, failures by reason, labels, cost.

    \b
    Example:
      tagllm inspect out/demo
    """
    from builder.inspect import summary

    info = summary(out)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(info["text"])


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--threshold", type=float, help="New global score threshold.")
@click.option("--thresholds", "thresholds_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Per-label thresholds YAML (e.g. from `tagllm eval --tune`).")
@handle_errors
def relabel(out: Path, threshold: float | None, thresholds_file: Path | None) -> None:
    """Re-threshold OUT from the cached answers: no engine call, every file rewritten.

    \b
    Example:
      tagllm relabel out/demo --threshold 0.7
      tagllm relabel out/demo --thresholds out/demo/eval/thresholds.yaml
    """
    from builder.maintain import relabel as run_relabel

    print_summary(run_relabel(out, threshold, thresholds_file))


@main.command("retry-failed")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe field.")
@click.option("--no-progress", is_flag=True, help="No live progress bar.")
@handle_errors
def retry_failed(out: Path, sets: tuple[str, ...], no_progress: bool) -> None:
    """Re-run only the failed items of OUT (their shards are rewritten; ok answers come from the cache).

    \b
    Example:
      tagllm retry-failed out/coco2014 --set engine.timeout=300
    """
    from builder.maintain import retry_failed as run_retry

    print_summary(run_retry(out, list(sets), progress=not no_progress))


def _need(extra: str, fn: Callable[[], Any]) -> Any:
    """Import an optional part; a missing dependency becomes one line naming the extra."""
    try:
        return fn()
    except ImportError as exc:
        hint = f"pip install 'tagllm[{extra}]'"
        raise UserError(f"this command needs tagllm[{extra}] ({exc.name} is missing): {hint}") from exc


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dev", "dev", type=int, default=200, show_default=True,
              help="Calibrate on the first N source items that have human labels.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Propose / re-check rounds.")
@click.option("--worst", type=int, default=5, show_default=True, help="Labels revised per round.")
@click.option("--out", "out_sheet", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the calibrated concept sheet (YAML).")
@click.option("--engine", type=click.Choice(["auto", "sglang", "http", "transformers", "simulated"]),
              help="Tagging backend (overrides engine.kind).")
@click.option("--model", help="Tagging model (overrides engine.model).")
@click.option("--server", "servers", multiple=True, help="Tagging http engine: server URL (repeatable).")
@click.option("--api", type=click.Choice(["http-sglang", "openai", "vllm"]), help="Tagging http engine protocol.")
@click.option("--strategy", type=click.Choice(["tagllm", "yes-no"]), help="Strategy run on the dev set.")
@click.option("--llm-engine", type=click.Choice(["sglang", "http", "transformers", "simulated"]),
              help="Engine of the LLM that revises entries (default: the tagging engine).")
@click.option("--llm-model", help="Model of that LLM.")
@click.option("--llm-server", "llm_servers", multiple=True, help="http: server URL of that LLM (repeatable).")
@click.option("--llm-api", type=click.Choice(["http-sglang", "openai", "vllm"]), help="http: protocol of that LLM.")
@click.option("--no-tune", is_flag=True, help="Do not tune per-label thresholds on the dev set.")
@click.option("--min-positives", type=int, default=3, show_default=True,
              help="Tune a label's threshold only with at least this many dev positives.")
@click.option("--interactive", is_flag=True, help="Review each proposal (diff + dev metrics): accept, edit, skip.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the request cache here so a rerun replays answers (default: a temp folder).")
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@handle_errors
def calibrate(recipe: Path, dev: int, rounds: int, worst: int, out_sheet: Path, engine: str | None,
              model: str | None, servers: tuple[str, ...], api: str | None, strategy: str | None,
              llm_engine: str | None, llm_model: str | None, llm_servers: tuple[str, ...], llm_api: str | None,
              no_tune: bool, min_positives: int, interactive: bool, work_dir: Path | None,
              sets: tuple[str, ...]) -> None:
    """Calibrate RECIPE's concept sheet on human-labeled dev images; write the revised sheet.

    \b
    Example:
      tagllm calibrate recipes/coco2014.yaml --dev 300 --rounds 3 --out recipes/concepts/coco80.calibrated.yaml \\
          --llm-engine http --llm-server http://localhost:30000 --llm-model Qwen/Qwen2.5-72B-Instruct
      tagllm calibrate recipes/demo.yaml --dev 25 --strategy yes-no --out /tmp/sheet.yaml --interactive
    """
    from builder.tagger.calibrate import calibrate as run_calibrate

    overrides = _build_overrides(engine, model, servers, api, None, None, (), strategy, sets)
    result = run_calibrate(recipe, dev=dev, rounds=rounds, out_sheet=out_sheet, overrides=overrides,
                           llm_engine=llm_engine, llm_model=llm_model, llm_servers=llm_servers, llm_api=llm_api,
                           worst=worst, tune_thresholds=not no_tune, min_positives=min_positives,
                           interactive=interactive, work_dir=work_dir, echo=click.echo)
    click.echo(result.summary())


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Print a Markdown table (default: a terminal table).")
@handle_errors
def compare(runs: tuple[Path, ...], as_json: bool, as_markdown: bool) -> None:
    """One table of several builds: cost per image, metrics against human labels, candidate recall.

    \b
    Example:
      for s in tagllm yes-no all-in-one open-ended; do tagllm build recipes/demo.yaml --strategy $s --out out/$s; done
      tagllm compare out/tagllm out/yes-no out/all-in-one out/open-ended
    """
    from builder.compare import compare as run_compare
    from builder.compare import to_json, to_markdown, to_rich

    rows = run_compare(list(runs))
    if as_json:
        click.echo(to_json(rows))
    elif as_markdown:
        click.echo(to_markdown(rows))
    else:
        from rich.console import Console

        Console().print(to_rich(rows))


@main.command("eval")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--reference", help="Human labels elsewhere: another output folder, a recipe, or an image folder "
                                  "with metadata.jsonl (default: the labels carried in the records).")
@click.option("--threshold", type=float, help="Evaluate at this global threshold instead of the built labels.")
@click.option("--thresholds", "thresholds_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Evaluate with these per-label thresholds.")
@click.option("--tune", is_flag=True, help="Tune per-label thresholds and write eval/thresholds.yaml.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (default OUT/eval).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@handle_errors
def eval_command(out: Path, reference: str | None, threshold: float | None, thresholds_file: Path | None,
                 tune: bool, report_dir: Path | None, no_plots: bool) -> None:
    """Compare OUT's labels with human labels: CP/CR/CF1, OP/OR/OF1, mAP, per class; report and plots.

    \b
    Example:
      tagllm eval out/demo --tune
      tagllm relabel out/demo --thresholds out/demo/eval/thresholds.yaml
    """
    from builder.card import write_card

    evaluate = _need("eval", lambda: __import__("builder.evaluate", fromlist=["run_eval"]))
    if threshold is not None and thresholds_file is not None:
        raise UserError("give --threshold or --thresholds, not both")
    result = evaluate.run_eval(out, reference, threshold if threshold is not None else thresholds_file,
                               tune=tune, report_dir=report_dir, plots=not no_plots)
    o = result["overall"]
    click.echo(f"{result['images']} images vs human labels: " + "  ".join(
        f"{k} {100 * o[k]:.1f}" for k in ("CP", "CR", "CF1", "OP", "OR", "OF1", "mAP") if o.get(k) is not None))
    if "tuned" in result:
        click.echo(f"tuned per-label thresholds: OF1 {100 * result['tuned']['OF1']:.1f} (on the same images)")
    click.echo("report: " + ", ".join(result["written"].values()))
    if report_dir is None:
        write_card(out)  # the card gets its evaluation section
    if result.get("notice"):
        click.echo(result["notice"])


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--test", "test_source", required=True,
              help="Human-labeled test split: an image folder with metadata.jsonl, or another output folder.")
@click.option("--labels", type=click.Choice(["machine", "reference"]), default="machine", show_default=True,
              help="Train on the machine labels or on the human reference labels.")
@click.option("--backbone", default="tinycnn", show_default=True, help="tinycnn or any timm model name.")
@click.option("--pretrained", is_flag=False, flag_value="true", default=None,
              help="Use pretrained weights found locally (optionally a weights FILE).")
@click.option("--linear-probe", is_flag=True, help="Freeze the backbone; train only the classifier.")
@click.option("--loss", type=click.Choice(["bce", "asl"]), default="bce", show_default=True)
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", default=3e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--image-size", type=int, help="Input size (default 64 for tinycnn, 224 otherwise).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Where train.json goes.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--no-progress", is_flag=True)
@handle_errors
def train(out: Path, test_source: str, labels: str, backbone: str, pretrained: str | None, linear_probe: bool,
          loss: str, epochs: int, batch_size: int, lr: float, seed: int, image_size: int | None, device: str,
          run_dir: Path | None, resume: bool, no_progress: bool) -> None:
    """Train a multi-label classifier on OUT and report its mAP on a human-labeled test split.

    \b
    Example:
      tagllm train out/coco2014 --test out/coco2014-val --backbone resnet50 --pretrained --labels machine
      tagllm train out/coco2014 --test out/coco2014-val --backbone resnet50 --pretrained --labels reference
    """
    trainer = _need("train", lambda: __import__("builder.train", fromlist=["train"]))
    weights: bool | str = False if pretrained is None else (True if pretrained == "true" else pretrained)
    result = trainer.train(out, test_source, labels=labels, backbone=backbone, pretrained=weights,
                           linear_probe=linear_probe, loss=loss, epochs=epochs, batch_size=batch_size, lr=lr,
                           seed=seed, image_size=image_size, device=None if device == "auto" else device,
                           run_dir=run_dir, resume=resume, progress=not no_progress)
    m_ap = result["mAP"]
    click.echo(f"test mAP {'n/a' if m_ap is None else f'{100 * m_ap:.2f}'} on {result['test_images']} images "
               f"({labels} labels, {backbone}, seed {seed}); {result['run_dir']}/train.json")
    if result.get("notice"):
        click.echo(result["notice"])


@main.command("compare-training")
@click.option("--machine", "machine_runs", multiple=True, required=True, help="Run(s) trained on machine labels.")
@click.option("--human", "human_runs", multiple=True, required=True, help="Run(s) trained on human labels.")
@click.option("--baseline", "baseline_runs", multiple=True, help="Run(s) trained on plain-MLLM labels.")
@handle_errors
def compare_training_command(machine_runs: tuple[str, ...], human_runs: tuple[str, ...],
                             baseline_runs: tuple[str, ...]) -> None:
    """mAP ratio of machine-label vs human-label training, and gap closed over a baseline.

    \b
    Example:
      tagllm compare-training --machine out/a/train/machine-tinycnn-s0 --human out/a/train/reference-tinycnn-s0
    """
    trainer = _need("train", lambda: __import__("builder.train", fromlist=["compare_training"]))
    result = trainer.compare_training(list(machine_runs), list(human_runs), list(baseline_runs) or None)
    click.echo(json.dumps(result, indent=2))


@main.command("serve-sim")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=30000, show_default=True, type=int)
@click.option("--latency", default=0.0, show_default=True, help="Seconds each request takes.")
@click.option("--capacity", default=0, show_default=True,
              help="Requests processed at once (0 = unbounded); the rest queue.")
@click.option("--fault-5xx", default=0.0, show_default=True, help="Rate of 500/503 answers.")
@click.option("--fault-timeout", default=0.0, show_default=True, help="Rate of requests that hang.")
@click.option("--fault-drop", default=0.0, show_default=True, help="Rate of dropped connections.")
@click.option("--fault-malformed", default=0.0, show_default=True, help="Rate of bodies that are not JSON.")
@click.option("--fault-empty", default=0.0, show_default=True, help="Rate of empty answers.")
@click.option("--fault-violate", default=0.0, show_default=True, help="Rate of answers that break the constraint.")
@click.option("--hang-seconds", default=30.0, show_default=True, help="How long a 'timeout' fault hangs.")
@click.option("--seed", default=0, show_default=True, help="Seed of the fault draws.")
@click.option("--model-name", default="tagllm-sim", show_default=True, help="Model name the server reports.")
@click.option("--api-key-env", help="Require the API key held in this environment variable.")
@handle_errors
def serve_sim(recipe: Path, host: str, port: int, api_key_env: str | None, **options: Any) -> None:
    """Serve SGLang's /generate and OpenAI's /v1/chat/completions from the simulated engine.

    RECIPE gives the vocabulary and the human labels the answers come from. Use it to dry-run a
    cluster configuration, or to test clients, with latency, capacity and injected faults.

    \b
    Example:
      tagllm serve-sim recipes/demo.yaml --port 30000 --latency 0.05 --capacity 64 --fault-5xx 0.05
      tagllm build recipes/demo.yaml --engine http --server http://127.0.0.1:30000 --api openai
    """
    from builder.serve_sim import serve

    click.echo(SIM_BANNER, err=True)
    serve(recipe, host=host, port=port, api_key_env=api_key_env, **options)


@main.group()
def dev() -> None:
    """Developer helpers: tiny models and synthetic data for tests and demos."""


@dev.command("make-tiny-vlm")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arch", type=click.Choice(["llava", "idefics3", "qwen2_5_vl"]), default="llava", show_default=True)
@click.option("--seed", default=0, show_default=True)
@handle_errors
def make_tiny_vlm(out_dir: Path, arch: str, seed: int) -> None:
    """Write a tiny randomly initialised VLM to OUT_DIR (needs tagllm[hf]); its answers are noise.

    \b
    Example:
      tagllm dev make-tiny-vlm /tmp/tiny --arch qwen2_5_vl
      tagllm build recipes/demo.yaml --engine transformers --model /tmp/tiny --out out/tiny
    """
    from builder.dev.tiny_vlm import make_tiny_vlm as make

    click.echo(make(out_dir, arch=arch, seed=seed))


@dev.command("make-synthetic")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n", default=1000, show_default=True, help="Training images.")
@click.option("--n-test", default=300, show_default=True, help="Test images (human-labeled split).")
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default=64, show_default=True, help="Image side in pixels.")
@click.option("--set", "sets", multiple=True, metavar="RATE=VALUE", help="Simulated noise, e.g. miss_rate=0.4.")
@handle_errors
def make_synthetic(out_dir: Path, n: int, n_test: int, seed: int, size: int, sets: tuple[str, ...]) -> None:
    """Write synthetic scenes with known labels (train + test), a vocabulary and a recipe.

    \b
    Example:
      tagllm dev make-synthetic /tmp/syn --n 600 --set miss_rate=0.3
      tagllm build /tmp/syn/recipe.yaml && tagllm train /tmp/syn/out --test /tmp/syn/test
    """
    from builder.recipe import apply_overrides
    from builder.synthetic import make_synthetic as make

    simulation = apply_overrides({}, list(sets), "--set")
    made = make(out_dir, n=n, seed=seed, n_test=n_test, size=size, simulation=simulation or None)
    click.echo(f"recipe: {made.recipe}")


@main.group()
def recipe() -> None:
    """Check recipes and print their schema."""


@recipe.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "sets", multiple=True, metavar="KEY.PATH=VALUE", help="Override any recipe field.")
@handle_errors
def recipe_check(file: Path, sets: tuple[str, ...]) -> None:
    """Validate FILE (and the vocabulary and concept sheet it names) without running anything.

    \b
    Example:
      tagllm recipe check recipes/coco2014.yaml
    """
    from builder.recipe import load_recipe
    from builder.tagger import TaggingContext

    loaded = load_recipe(file, list(sets))
    TaggingContext(loaded)  # templates parse
    v = loaded.vocab
    click.echo(f"{file}: ok ({v.name}: {len(v.names)} labels in {len(v.groups)} groups; "
               f"strategy {loaded.recipe.tagging.strategy}; engine {loaded.recipe.engine.kind})")


@recipe.command("schema")
def recipe_schema() -> None:
    """Print the recipe's JSON schema (every field with its description).

    \b
    Example:
      tagllm recipe schema > recipe.schema.json
    """
    from builder.recipe import recipe_schema as schema

    click.echo(json.dumps(schema(), indent=2))


if __name__ == "__main__":
    main()
