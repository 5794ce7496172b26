"""`omniforge`: the one command line. Sub-commands only parse arguments and call flows or storage."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from omniforge.config import ConfigError, PipelineConfig, dump_yaml, load_pipeline_config

app = typer.Typer(help="Build, tokenize, train and evaluate LLaMA-Omni 2 style spoken chatbots.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Inspect the versioned artifact store.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(artifacts_app, name="artifacts")

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="YAML run config (default: built-in defaults).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a field: section.field=value (repeatable).")]
StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Store URL (overrides store.url).")]


def load(config: str | None, overrides: list[str] | None, store: str | None = None) -> PipelineConfig:
    """Load the config or exit with the error message (no traceback for a user's mistake)."""
    extra = [f"store.url={store}"] if store else []
    try:
        return load_pipeline_config(config, list(overrides or []) + extra)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from None


def open_store(config: str | None, overrides: list[str] | None, store: str | None):
    from omniforge.storage import store_from_config

    return store_from_config(load(config, overrides, store).store)


def preflight(config: PipelineConfig, *, source: tuple[str, object] | None = None, eval_set: bool = False):
    """Fail in one line before any work starts: the store (returned, reached once), the input file
    (`source`: its setting's name and the source section), the eval set."""
    from omniforge.flows import preflight as checks

    store = checks.check_store(config)
    if source is not None:
        checks.check_source(*source, store)
    if eval_set:
        checks.check_eval_set(config, store)
    return store


def _version(value: bool) -> None:
    if value:
        from omniforge import __version__

        typer.echo(f"omniforge {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")] = False) -> None:
    """Build, tokenize, train and evaluate LLaMA-Omni 2 style spoken chatbots."""


def fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(1)


@config_app.command("show")
def config_show(config: Annotated[Optional[str], typer.Argument(help="YAML run config.")] = None,
                set_: SetOpt = None) -> None:
    """Print the resolved config (defaults + file + overrides) and its hash."""
    resolved = load(config, set_)
    typer.echo(dump_yaml(resolved), nl=False)
    typer.echo(f"# config hash: {resolved.hash()}")


@artifacts_app.command("list")
def artifacts_list(kind: Annotated[Optional[str], typer.Option(help="Only this kind.")] = None,
                   config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
    """List every artifact and its versions."""
    from omniforge.storage import ArtifactNameError

    st = open_store(config, set_, store)
    try:
        refs = st.names(kind)
    except ArtifactNameError as err:
        fail(str(err))
    if not refs:
        typer.echo(f"no artifacts in {st.url}")
    for ref in refs:
        versions = st.versions(ref.kind, ref.name)
        typer.echo(f"{ref}  versions: {', '.join(map(str, versions))}")


def _with_store_errors(action):
    """Run a store action, turning a bad reference or a missing version into a clean message."""
    from omniforge.storage import ArtifactNameError, ArtifactNotFound

    try:
        return action()
    except (ArtifactNameError, ArtifactNotFound) as err:
        fail(str(err))


@artifacts_app.command("show")
def artifacts_show(ref: Annotated[str, typer.Argument(help="kind/name[@version]")],
                   config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
    """Print a version's manifest."""
    st = open_store(config, set_, store)
    manifest = _with_store_errors(lambda: st.manifest(ref))
    typer.echo(manifest.model_dump_json(indent=2))


@artifacts_app.command("lineage")
def artifacts_lineage(ref: Annotated[str, typer.Argument(help="kind/name[@version]")],
                      config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
    """Print the tree of versions a version was made from."""
    st = open_store(config, set_, store)
    tree = _with_store_errors(lambda: st.lineage(ref))

    def show(node: dict, depth: int) -> None:
        typer.echo(f"{'  ' * depth}{'<- ' if depth else ''}{node['ref']}  ({node['created_at']})")
        for parent in node["parents"]:
            show(parent, depth + 1)

    show(tree, 0)


@artifacts_app.command("verify")
def artifacts_verify(ref: Annotated[str, typer.Argument(help="kind/name[@version]")],
                     config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
    """Re-hash every file of a version; exit 1 naming each missing or corrupted file."""
    st = open_store(config, set_, store)
    problems = _with_store_errors(lambda: st.verify(ref))
    if problems:
        fail("\n".join(problems))
    typer.echo(json.dumps({"ref": str(st.resolve(ref)), "ok": True}))


@artifacts_app.command("gc")
def artifacts_gc(kind: Annotated[Optional[str], typer.Option(help="Only this kind.")] = None,
                 name: Annotated[Optional[str], typer.Option(help="Only this name (with --kind).")] = None,
                 grace_hours: Annotated[float, typer.Option(help="Keep files younger than this: longer than any "
                                                            "writer runs, so one still at work is never touched.")] = 168.0,
                 delete: Annotated[bool, typer.Option("--delete", help="Remove them (default: only list).")] = False,
                 config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
    """List (or with --delete remove) files no published version references: what killed writers left."""
    from datetime import timedelta

    from omniforge.storage.gc import find_garbage, remove_garbage

    if name and not kind:
        fail("--name needs --kind")
    st = open_store(config, set_, store)
    garbage = find_garbage(st, timedelta(hours=grace_hours), kind, name)
    for item in garbage:
        typer.echo(f"{item.path}  {item.bytes} bytes  {item.modified:%Y-%m-%d %H:%M}")
    total = sum(item.bytes for item in garbage)
    if delete:
        typer.echo(f"removed {len(garbage)} files ({remove_garbage(st, garbage)} bytes)")
    else:
        typer.echo(f"{len(garbage)} unreferenced files ({total} bytes) older than {grace_hours:g} h; "
                   "--delete removes them")


@app.command("generate-dialogues")
def generate_dialogues(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Write multi-turn dialogues from single-turn instructions (generate.source) with an LLM (generate.chat);
    build speech from them with --set build.source.kind=generated build.source.path=dialogues/NAME."""
    resolved = load(config, set_)
    if not resolved.generate.chat.model:
        fail("error: generate.chat.model is not set (a model at generate.chat.endpoint, or a local model directory)")
    preflight(resolved, source=("generate.source", resolved.generate.source))
    from omniforge.flows.generate_dialogues import generate_dialogues as flow

    summary = flow(resolved)
    typer.echo(f"dialogues: {summary['dialogues_version']} ({summary['dialogues']} dialogues, {summary['rejects']} "
               f"rejects) in {resolved.store.url}")


@app.command("build-dialogues")
def build_dialogues(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Build (or extend) a spoken-dialogue dataset: text -> speech-ready text -> TTS on Ray -> store."""
    resolved = load(config, set_)
    preflight(resolved, source=("build.source", resolved.build.source))
    from omniforge.flows.build_dialogues import build_dialogues as flow

    summary = flow(resolved)
    typer.echo(f"speech dataset: {summary['speech_version']} in {resolved.store.url}")


@app.command("build-corpus")
def build_corpus(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Build (or extend) the TTS corpus (corpus.source, plus corpus.dialogues' assistant turns) in the
    assistant's voice; tokenize it with `tokenize-units --set units.speech=speech/NAME units.name=NAME
    units.tokenizer=...` and pretrain the TTS LM on it with `pretrain-tts`."""
    resolved = load(config, set_)
    preflight(resolved, source=("corpus.source", resolved.corpus.source))
    from omniforge.flows.build_corpus import build_corpus as flow

    summary = flow(resolved)
    typer.echo(f"TTS corpus: {summary['speech_version']} ({summary['turns']} utterances, {summary['hours'] * 60:.1f} "
               f"min) in {resolved.store.url}")


@app.command("pretrain-tts")
def pretrain_tts(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Pretrain the TTS LM on the corpus's units (stage I(b)); later trainings start from it with
    --set train.tts_from=checkpoint/CORPUS_NAME."""
    resolved = load(config, set_)
    preflight(resolved)
    from omniforge.flows.pretrain_tts import pretrain_tts as flow

    summary = flow(resolved)
    typer.echo(f"pretrained TTS LM: {summary['checkpoint']} in {resolved.store.url}")


@app.command("tokenize-units")
def tokenize_units(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Tokenize a speech version's turns into discrete units (fitting the k-means tokenizer once)."""
    resolved = load(config, set_)
    preflight(resolved)
    from omniforge.flows.tokenize_units import tokenize_units as flow

    summary = flow(resolved)
    typer.echo(f"units: {summary['units_version']} (tokenizer {summary['tokenizer_version']}) in {resolved.store.url}")


@app.command("import-units")
def import_units(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Import CosyVoice 2 tokens in VocalNet's layout (units.vocalnet.index): speech, tokenizer and units versions."""
    resolved = load(config, set_)
    preflight(resolved)
    from omniforge.flows.import_units import import_units as flow

    summary = flow(resolved)
    typer.echo(f"units: {summary['units_version']} (speech {summary['speech_version']}, {summary['rejects']} "
               f"rejected items) in {resolved.store.url}")


@app.command("units-roundtrip")
def units_roundtrip(config: ConfigOpt = None, set_: SetOpt = None,
                    limit: Annotated[int, typer.Option(help="Utterances to score.")] = 20,
                    speech: Annotated[Optional[str], typer.Option(help="Score this speech version's answers (held "
                                                                  "out, e.g. speech/demo-eval) instead of the units' own.")] = None) -> None:
    """Speech -> units -> speech on the latest units version: trains (or reuses) the units -> audio
    decoder, then scores original and resynthesized speech (ASR WER vs the text, DNSMOS)."""
    resolved = load(config, set_)
    from omniforge.storage import store_from_config
    from omniforge.tasks.units import steps

    report = steps.roundtrip_report(store_from_config(resolved.store), resolved, limit, speech)
    typer.echo(json.dumps(report, indent=2))


@app.command("run")
def run(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """The whole job: build dialogues -> tokenize units -> train -> evaluate, as one pipeline run."""
    resolved = load(config, set_)
    preflight(resolved, source=("build.source", resolved.build.source), eval_set=resolved.evaluate.build is None)
    from omniforge.flows.pipeline import pipeline

    summary = pipeline(resolved)
    metrics = summary["metrics"]
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"\nmodel {summary['checkpoint']}: S2T accuracy {metrics['s2t_accuracy']}, S2S accuracy "
               f"{metrics['s2s_accuracy']}, first-audio latency p50 {metrics['latency_p50']} s")
    typer.echo(f"report: {summary['report']}")


@app.command("deploy")
def deploy(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Register the scheduled build and the event-triggered tokenization, training and evaluation on
    the Prefect server at PREFECT_API_URL; `prefect worker start --pool <deploy.work_pool>` runs them."""
    resolved = load(config, set_)
    from omniforge.flows.deployments import deploy as register

    deployed = register(resolved)
    for name, deployment_id in deployed.values():
        typer.echo(f"deployed {name} ({deployment_id})")
    typer.echo(f"start a worker: prefect worker start --pool {resolved.deploy.work_pool}")
    typer.echo(f"run the chain now (build -> units -> train -> evaluate): prefect deployment run "
               f"'{deployed['build'][0]}'")


@app.command("train")
def train(config: ConfigOpt = None, set_: SetOpt = None,
          stage: Annotated[Optional[list[str]], typer.Option(help="Run only this stage (repeatable): "
                                                             "s2t, tts, s2s.")] = None) -> None:
    """Train the model in stages on Ray Train (skips finished stages, resumes unfinished ones)."""
    overrides = list(set_ or []) + ([f"train.stages={json.dumps(stage)}"] if stage else [])
    resolved = load(config, overrides)
    preflight(resolved)
    from omniforge.flows.train import train as flow

    summary = flow(resolved)
    typer.echo(json.dumps(summary, indent=2))


@app.command("evaluate")
def evaluate(config: ConfigOpt = None, set_: SetOpt = None,
             checkpoint: Annotated[Optional[str], typer.Option(help="checkpoint/NAME[@version]")] = None,
             eval_set: Annotated[Optional[str], typer.Option(help="speech/NAME[@version], or a questions.json "
                                                             "/ .jsonl file")] = None) -> None:
    """Evaluate a checkpoint while it streams: accuracy, ASR-WER, DNSMOS, latency; writes a report."""
    overrides = list(set_ or []) + ([f"evaluate.checkpoint={checkpoint}"] if checkpoint else []) + (
        [f"evaluate.eval_set={eval_set}"] if eval_set else [])
    resolved = load(config, overrides)
    preflight(resolved, eval_set=True)
    from omniforge.flows.evaluate import evaluate as flow

    summary = flow(resolved)
    typer.echo(json.dumps(summary, indent=2))


@app.command("speak")
def speak(config: ConfigOpt = None, set_: SetOpt = None,
          text: Annotated[Optional[list[str]], typer.Option("--text", "-t",
                                                            help="A sentence to say (repeatable).")] = None,
          file: Annotated[Optional[str], typer.Option(help="Sentences: one per line (.txt), or JSONL with text and "
                                                      "key-word answers (.jsonl).")] = None,
          checkpoint: Annotated[Optional[str], typer.Option(help="checkpoint/NAME[@version]")] = None,
          out: Annotated[str, typer.Option(help="Folder for the wavs and spoken.jsonl.")] = "omniforge-data/speak",
          text_only: Annotated[bool, typer.Option("--text-only", help="Speak from the text embeddings alone (what "
                                                  "stage-1 TTS taught), not from the LLM's states.")] = False,
          asr: Annotated[bool, typer.Option("--asr/--no-asr", help="Hear each wav back (evaluate.asr_model): ASR-WER "
                                            "and key words.")] = True) -> None:
    """Say the given text through a checkpoint's own TTS LM and decoder, streamed, into wav files."""
    from omniforge.tasks.evaluate.speak import Sentence, read_sentences
    from omniforge.tasks.evaluate.steps import speak_to_files

    resolved = load(config, list(set_ or []) + ([f"evaluate.checkpoint={checkpoint}"] if checkpoint else []))
    store = preflight(resolved)
    sentences = [Sentence(f"text-{i + 1}", t.strip()) for i, t in enumerate(text or []) if t.strip()]
    sentences += read_sentences(file) if file else []
    if not sentences:
        fail("give --text SENTENCE or --file SENTENCES")

    def show(result) -> None:
        heard = "" if result.transcript is None else f" heard {result.transcript!r} (WER {result.asr_wer})"
        typer.echo(f"{result.id}: {result.audio_seconds:.2f} s, {result.units} units"
                   f"{' (length guard)' if result.length_guard else ''}{heard}")

    metrics = speak_to_files(store, resolved, sentences, out, llm_states=not text_only, asr=asr, on_spoken=show)
    typer.echo(json.dumps(metrics, indent=2))
    typer.echo(f"wavs and spoken.jsonl in {out}")


@app.command("serve")
def serve(config: ConfigOpt = None, set_: SetOpt = None,
          checkpoint: Annotated[Optional[str], typer.Option(help="checkpoint/NAME[@version]")] = None,
          host: Annotated[Optional[str], typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
          port: Annotated[Optional[int], typer.Option(help="TCP port (default 8000).")] = None) -> None:
    """Talk to a checkpoint: a WebSocket endpoint (/v1/realtime, OpenAI Realtime's events) and a page
    at / that answers many conversations at once."""
    overrides = list(set_ or []) + [f"serve.{name}={value}" for name, value in
                                    (("checkpoint", checkpoint), ("host", host), ("port", port)) if value is not None]
    resolved = load(config, overrides)
    store = preflight(resolved)
    import uvicorn

    from omniforge.tasks.serve.app import create_app, open_answerer

    settings = resolved.serve
    app_ = create_app(open_answerer(store, resolved), settings)
    typer.echo(f"serving {settings.checkpoint} on http://{settings.host}:{settings.port}/ (WebSocket /v1/realtime)")
    uvicorn.run(app_, host=settings.host, port=settings.port, log_level="warning",
                ws_max_size=settings.max_frame_bytes * 2)


@app.command("compare")
def compare(first: Annotated[str, typer.Argument(help="eval/NAME@version")],
            second: Annotated[str, typer.Argument(help="eval/NAME@version")],
            config: ConfigOpt = None, set_: SetOpt = None, store: StoreOpt = None) -> None:
    """Two evaluations side by side."""
    from omniforge.tasks.evaluate.report import compare as side_by_side

    st = open_store(config, set_, store)
    typer.echo(_with_store_errors(lambda: side_by_side(st, st.manifest(first), st.manifest(second))))


def main() -> None:
    """The entry point, and the one error boundary: an expected failure (omniforge.errors) prints
    one line and exits 2; anything else keeps its traceback."""
    from omniforge.errors import EXIT_INPUT_ERROR, expected_message
    from omniforge.offline_env import apply_offline_defaults

    apply_offline_defaults()
    try:
        app()
    except Exception as err:
        message = expected_message(err)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise SystemExit(EXIT_INPUT_ERROR) from None


if __name__ == "__main__":
    main()
