#!/usr/bin/env bash
# The main job, end to end on this machine: set up, make a tiny Phi-3 (no model hub is reachable
# here), fine-tune a LoRA adapter on the tone data, merge it, build an int4 ONNX model, and ask it
# for the tone of a few phrases.
set -euo pipefail
cd "$(dirname "$0")/../.."
OLIVEKUBE_SKIP_CONTROLPLANE=1 bash tools/setup.sh
here=examples/tone-classifier
if [[ ! -f "$here/models/tiny-phi3/config.json" ]]; then
  echo "[tone-classifier] creating a tiny Phi-3 and its tokenizer in $here/models/tiny-phi3" >&2
  .venv/bin/python -m tools.tiny_models "$here/models/tiny-phi3" --arch phi3 --hidden 96 --layers 4 --heads 6 \
    --texts "$here/dataset-classification.json" --pretrain-column phrase --pretrain-steps 300 >/dev/null
fi
.venv/bin/olivekube run "$here/workflow.yaml"
for phrase in "I never expected the storm" "I am terrified of the dark forest" \
              "I feel so down about the news" "The concert made my whole day wonderful"; do
  printf '%-45s -> ' "$phrase"
  .venv/bin/olivekube generate "$here/outputs/tone-classifier-int4" --max-new-tokens 3 \
    --prompt "### Text: $phrase
### The tone is:
" | tail -n 1
done
