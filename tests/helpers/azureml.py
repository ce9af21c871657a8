"""The seed's Azure ML workflow, filled in for the local stand-in for Azure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from olivekube.api.olive_config import to_manifest
from tests.helpers.manifests import REPO

HF_TOKEN = "hf_" + "x1y2z3" * 6
SUB, RG, WS = "0b1f6471-1bf0-4dda-aec3-111122223333", "ml-rg", "ws"


def seed_aml_manifest(conda_file: Path, data_path: str = "data/tone train.json") -> dict[str, Any]:
    """The seed's Azure ML config with its placeholders filled in, converted as a user would."""
    text = (REPO / "examples/olive/phi3-seed-aml-legacy.json").read_text()
    text = text.replace("Your Azure Subscription ID", SUB).replace("Your Azure Subscrition ID", SUB)
    text = text.replace("Your Azure Resource Group", RG).replace("Your Azure ML Workspaces name", WS)
    text = text.replace("Your Azure AI Studio / Azure Machine Learning Service Compute Name", "gpu-cluster")
    text = text.replace("Your Azure AI Studio / Azure Machine Learning Service docker", "mcr.microsoft.com/x:1")
    text = text.replace("Your train_data.json Azure ML Location", data_path)
    config = json.loads(text)
    for system in config["systems"].values():
        system["config"]["aml_docker_config"]["conda_file_path"] = str(conda_file)
    manifest, _ = to_manifest(config, "seed-aml", "ml")
    return manifest
