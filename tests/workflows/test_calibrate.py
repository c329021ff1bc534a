"""Concept calibration end to end with the simulated engine, automatic and interactive."""

from __future__ import annotations

import json
import stat
import sys

import click
import pytest
from click.testing import CliRunner
from tinydata import SMALL_VOCAB

from builder.analysis.evaluate import evaluate
from builder.engines.simulated import SIM_IDS, NoiseModel, SimulatedModel
from builder.errors import UserError
from builder.method.calibration import Decision, calibration_prompt, revision_request
from builder.prompts.constraints import Constraint
from builder.prompts.scoring import yes_probability
from builder.publish import layout
from builder.recipe.concepts import Concept, load_concept_sheet
from builder.recipe.model import load_recipe
from builder.recipe.vocab import vocabulary_from_data
from builder.workflows.calibrate import Settings, calibrate

METRICS = {"support", "tp", "fp", "fn", "precision", "recall", "f1"}


@pytest.fixture
def yes_no_recipe(write_recipe):
    """yes-no asks every label, so the look-alikes of the sim's disambiguation model show up often."""
    return write_recipe("calibrate.yaml", tagging={"strategy": "yes-no"})


# --- the simulated model of disambiguation ---------------------------------------------------------


def ask(model: SimulatedModel, question: str, truth: list[str], image: bytes) -> float:
    """P(yes) of the model's answer, scored from its logprobs as the simulated engine scores them."""
    answer = model.answer(image, question, question, Constraint("yesno"), truth, True)
    return yes_probability(answer.extra["logprobs"], SIM_IDS).p_yes


def test_sim_confuses_look_alikes_unless_warned():
    vocab = vocabulary_from_data(SMALL_VOCAB, "small")
    model = SimulatedModel(vocab, NoiseModel(flip_rate=0.0, verify_confusion_rate=1.0))
    plain = "Is there a dog in this image? Answer yes or no."
    warned = plain + '\nDefinition of "dog": A dog.\nDo not confuse it with: cat.'
    excluded = plain + "\nDoes not count: cats and kittens."
    for i in range(5):
        image = bytes([i])
        assert ask(model, plain, ["cat"], image) > 0.5  # cat present: taken in
        assert ask(model, warned, ["cat"], image) < 0.5
        assert ask(model, excluded, ["cat"], image) < 0.5  # "kittens" is a synonym of cat
        assert ask(model, plain, ["car"], image) < 0.5  # another group: no look-alike
        assert ask(model, plain, ["cat", "bird"], image) > 0.5  # bird is not warned about
        assert ask(model, warned + "\nDo not confuse it with: bird.", ["cat", "bird"], image) < 0.5
    off = SimulatedModel(vocab, NoiseModel(flip_rate=0.0, verify_confusion_rate=0.0))
    assert ask(off, plain, ["cat"], b"x") < 0.5


def test_calibration_request_is_text_only_and_the_sim_answers_it(write_recipe):
    vocab = load_recipe(write_recipe()).vocab
    stats = {"support": 2, "tp": 2, "fp": 3, "fn": 0, "precision": 0.4, "recall": 1.0, "f1": 0.571}
    prompt = calibration_prompt(vocab, "dog", Concept(description="A dog."), stats,
                                [{"label": "cat", "count": 3}], [], 12, [])
    request = revision_request(prompt, vocab.names)
    assert request.image is None
    assert all(part["type"] == "text" for m in request.messages if isinstance(m["content"], list)
               for part in m["content"])
    schema = json.loads(request.constraint.schema)
    assert request.constraint.kind == "json_schema" and "uniqueItems" not in request.constraint.schema
    assert set(schema["properties"]) == {"description", "includes", "excludes", "confusable", "cooccurring"}
    answer = SimulatedModel(vocab).answer(None, prompt, prompt, request.constraint, None, False)
    entry = json.loads(answer.text)
    assert entry["confusable"] == ["cat"] and entry["description"] == "A dog."
    assert any("cat" in line for line in entry["excludes"])


# --- calibrate ----------------------------------------------------------------------------------


def test_calibrate_writes_a_sheet_whose_kept_revisions_improve_f1(yes_no_recipe, build, tmp_path):
    out = tmp_path / "calibrated.yaml"
    result = calibrate(yes_no_recipe, Settings(dev=12, held_out=0, rounds=2, min_positives=2), out)
    sheet = load_concept_sheet(out)
    sheet.check_against(load_recipe(yes_no_recipe).vocab, str(out))
    prov = sheet.provenance
    assert prov["llm"]["engine"] == "simulated" and prov["tagging_engine"]["simulated"] is True
    assert "simulated" in prov["notice"].lower()
    assert prov["dev_metrics"]["images"] == 12 and prov["date"]
    for row in prov["labels"].values():
        assert set(row["before"]) == METRICS and set(row["after"]) == METRICS
    improved = [r for r in prov["revisions"] if r["kept"] and r["f1_after"] > r["f1_before"]]
    assert improved, prov["revisions"]
    for r in improved:
        assert sheet.concepts[r["label"]].confusable  # the sim's revision names its confusions
        assert prov["labels"][r["label"]]["after"]["f1"] > prov["labels"][r["label"]]["before"]["f1"]
    assert all(not r["kept"] for r in prov["revisions"] if r["decision"] == "rejected")
    assert prov["dev_metrics"]["after"]["CF1"] > prov["dev_metrics"]["before"]["CF1"]
    assert result.after["CF1"] == prov["dev_metrics"]["after"]["CF1"]
    assert "SIMULATED" in result.summary()

    # A build with the calibrated sheet reproduces the dev metrics the provenance promises.
    rebuilt = build(yes_no_recipe, ["tagging.concept_sheet=" + str(out), f"output.dir={tmp_path / 'rebuilt'}"])
    expected = prov["dev_metrics"]["after_tuned"] or prov["dev_metrics"]["after"]
    got = evaluate(rebuilt.out)["overall"]
    assert {k: got[k] for k in ("CP", "CR", "OP", "OR")} == {k: expected[k] for k in ("CP", "CR", "OP", "OR")}
    assert (rebuilt.out / layout.CONCEPTS).is_file()


def test_decide_callback_chooses_what_is_kept(yes_no_recipe, tmp_path):
    seen = []

    def decide(proposal):
        seen.append(proposal.label)
        assert proposal.metrics_after is not None and proposal.diff().startswith("---")
        return Decision("accept") if proposal.label == "bus" else Decision("skip")

    result = calibrate(yes_no_recipe, Settings(dev=12, held_out=0, rounds=1, tune=False), tmp_path / "s.yaml",
                       decide=decide)
    assert "bus" in seen and len(seen) > 1
    assert [p.label for p in result.kept] == ["bus"]
    sheet = load_concept_sheet(tmp_path / "s.yaml")
    assert list(sheet.concepts) == ["bus"]


def test_interactive_session_accept_skip_edit(yes_no_recipe, tmp_path, monkeypatch):
    editor = tmp_path / "editor.py"
    editor.write_text(f"#!{sys.executable}\n"
                      "import os, sys, time\n"
                      "text = open(sys.argv[1]).read().splitlines()\n"
                      "text[0] = 'description: Any dog, as a person wrote it.'\n"
                      "open(sys.argv[1], 'w').write('\\n'.join(text) + '\\n')\n"
                      "t = time.time() + 5\n"
                      "os.utime(sys.argv[1], (t, t))\n")
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(editor))
    out = tmp_path / "interactive.yaml"

    @click.command()
    def session() -> None:
        result = calibrate(yes_no_recipe, Settings(dev=12, held_out=0, rounds=1, interactive=True, tune=False), out)
        click.echo("decisions: " + json.dumps({p.label: p.decision for p in result.proposals}))

    # answer the first three proposals a, s, e; Enter (accept) for the rest
    run = CliRunner().invoke(session, input="a\ns\ne\n" + "\n" * 20)
    assert run.exit_code == 0, run.output
    decisions = json.loads(run.output.split("decisions: ")[1])  # in proposal order
    order = list(decisions)
    assert len(order) >= 3
    first, second, third = order[:3]
    assert [decisions[first], decisions[second], decisions[third]] == ["accepted", "skipped", "edited"]
    assert all(decisions[label] == "accepted" for label in order[3:])
    assert f"--- {third} (current)" in run.output and f"+++ {third} (proposed)" in run.output
    assert "\n+- " in run.output  # the diff shows a new confusable entry
    assert "dev (12 images" in run.output and "[a]ccept, [e]dit, [s]kip" in run.output
    sheet = load_concept_sheet(out)
    assert set(sheet.concepts) == set(order) - {second}
    assert sheet.concepts[third].description == "Any dog, as a person wrote it."
    assert sheet.concepts[third].confusable  # the rest of the proposal survived the edit
    edited = next(r for r in sheet.provenance["revisions"] if r["label"] == third)
    assert edited["decision"] == "edited" and edited["kept"] and edited["f1_after"] is not None


def test_strategies_without_verification_cannot_calibrate(write_recipe):
    recipe = write_recipe("aio.yaml", tagging={"strategy": "all-in-one"})
    with pytest.raises(UserError, match="does not use the concept sheet"):
        calibrate(recipe, Settings(dev=4, rounds=1))


def test_a_rerun_with_the_same_work_folder_replays_every_answer(yes_no_recipe, tmp_path):
    from builder.engines.references import source_references
    from builder.engines.registry import engine_from_spec

    loaded = load_recipe(yes_no_recipe)
    settings = Settings(dev=12, held_out=0, rounds=2, work_dir=tmp_path / "work")
    first = engine_from_spec(loaded.recipe.engine, loaded.vocab, references=source_references(loaded))
    calibrate(loaded, settings, engine=first)
    assert first.calls > 0
    again = engine_from_spec(loaded.recipe.engine, loaded.vocab, references=source_references(loaded))
    result = calibrate(loaded, settings, engine=again)
    assert again.calls == 0 and result.kept


def test_decides_on_dev_and_reports_held_out(yes_no_recipe, build, tmp_path):
    out = tmp_path / "split.yaml"
    result = calibrate(yes_no_recipe, Settings(dev=6, held_out=6, rounds=1, min_positives=1), out)
    assert result.dev.images == 6 and result.held_out.images == 6
    prov = load_concept_sheet(out).provenance
    assert len(prov["dev_keys"]) == 6 and prov["split"] == {**prov["split"], "dev": 6, "held_out": 6, "seed": 0}
    assert prov["held_out_metrics"]["images"] == 6 and set(prov["held_out_metrics"]["before"]) >= {"CF1", "OF1"}
    assert "held_out_metrics" in prov["note"]
    for p in result.proposals:  # every decision was made on the dev images only
        assert p.dev_size == 6
    lines = result.summary().splitlines()
    header = next(line for line in lines if "dev (6 images)" in line)
    assert "held-out (6 images)" in header and "quote the held-out figures" in result.summary()
    with pytest.raises(UserError, match="leaves none to hold out"):
        calibrate(yes_no_recipe, Settings(dev=12, held_out=5, rounds=1))
    # a build with the sheet: its card says the sheet was calibrated, with the simulated engine
    built = build(yes_no_recipe, ["tagging.concept_sheet=" + str(out), f"output.dir={tmp_path / 'with-sheet'}"])
    card = (built.out / layout.CARD).read_text()
    assert "calibrated by `tagllm calibrate` on 6 dev images; on 6 held-out images CF1" in card
    assert "Concept sheet calibrated with the simulated engine" in card
    # its evaluation leaves the calibration's dev images out of the figures to quote
    ev = evaluate(built.out)
    assert ev["tuned_on"]["overlap"] == 6 and ev["tuned_on"]["by"] == ["concept sheet (tagllm calibrate)"]


def test_calibrate_command_on_a_synthetic_set(tmp_path):
    """The issue's replay: a synthetic set, dev 60 of 240, dev and held-out printed side by side."""
    from builder.cli import main
    from builder.dev.synthetic import make_synthetic

    syn = make_synthetic(tmp_path / "syn", n=240, n_test=10, seed=0)
    run = CliRunner().invoke(main, ["calibrate", str(syn.recipe), "--dev", "60", "--held-out", "180",
                                    "--out", str(tmp_path / "sheet.yaml")])
    assert run.exit_code == 0, run.output
    header = next(line for line in run.output.splitlines() if "dev (60 images)" in line)
    assert "held-out (180 images)" in header
    rows = {line.split()[0]: line for line in run.output.splitlines() if line.strip().startswith(("before", "after"))}
    assert rows["before"].count("CF1") == 2 and rows["after"].count("CF1") == 2
    assert "SIMULATED" in run.output
