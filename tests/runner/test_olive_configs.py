"""`olivekube run` takes Olive configs as they are, including the seed's legacy form that Olive 0.13
itself can no longer run (PyTorchModel with hf_config)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from olivekube.storage.outputs import current_model
from tests.helpers.manifests import DATA
from tests.helpers.processes import olivekube_run

REPO = Path(__file__).resolve().parents[2]


def test_seed_legacy_config_runs_end_to_end(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The seed's own config: local data and model paths relative to the config, AzureML host and
    CUDA target (run here on the CPU, building int4 for CUDA), LoRA → merge → int4."""
    folder = tmp_path / "project"
    (folder / "dataset").mkdir(parents=True)
    shutil.copy(DATA, folder / "dataset" / "dataset-classification.json")
    shutil.copytree(tiny_models["phi3"], folder / "model-cache" / "microsoft" / "phi-3-mini")
    config = json.loads((REPO / "examples/olive/phi3-seed-legacy.json").read_text())
    (folder / "olive-config.json").write_text(json.dumps(config))
    out = olivekube_run(folder / "olive-config.json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "double_quant" in out.stderr  # dropped with a warning, as Olive ignored it
    output_dir = (
        tmp_path / "model-cache" / "models" / "phi3-finetuned"
    )  # engine.output_dir, relative to the config
    current = current_model(str(output_dir))
    assert current is not None
    final = Path(current)
    genai = json.loads((final / "genai_config.json").read_text())
    assert "cuda" in json.dumps(genai["model"]["decoder"]["session_options"]).lower()
    manifest = json.loads((final / "olivekube-manifest.json").read_text())
    assert manifest["metadata"]["precision"] == "int4"
    assert manifest["metadata"]["execution_provider"] == "cuda"


def test_olives_own_phi3_classification_config_runs(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Olive's examples/phi3/phi3_classification.json as Olive shipped it (legacy data form with
    params_config, QLoRA, load_best_model_at_end, a model_script no pass uses), with only the model
    and the step counts made tiny."""
    config = json.loads((REPO / "examples/olive/upstream/phi3_phi3_classification.json").read_text())
    config["input_model"]["config"]["hf_config"]["model_name"] = str(tiny_models["phi3"])
    args = config["passes"]["qlora"]["config"]["training_args"]
    args.update(max_steps=4, eval_steps=2, logging_steps=2, per_device_train_batch_size=4)
    (tmp_path / "models").mkdir()
    shutil.copy(DATA, tmp_path / "models" / "dataset-classification.json")
    (tmp_path / "olive-config.json").write_text(json.dumps(config))
    out = olivekube_run(tmp_path / "olive-config.json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "input_model.model_script: dropped" in out.stderr
    current = current_model(str(tmp_path / "models" / "phi3-classification"))
    assert current is not None and (Path(current) / "adapter_config.json").exists()
