"""The MLflow model of an exported run: a pyfunc that generates text with ``transformers``.

MLflow keeps this file with the model ("models from code") and runs it whenever the model is
loaded, so it stands alone: it imports MLflow, pandas, torch and transformers, never this project.
Its one artifact, ``hf_model``, is the Hugging Face GPT-2 directory of ``export --format hf``.

Input: a table with a ``prompt`` column (or a list of strings, or one string). Output: a table with
a ``text`` column, each prompt followed by its continuation. Params: ``max_new_tokens``,
``temperature`` (0: greedy), ``top_k``, ``seed`` (-1: none).
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

DEFAULT_PARAMS = {"max_new_tokens": 50, "temperature": 0.8, "top_k": 50, "seed": -1}


class TextGenerator(PythonModel):
    def load_context(self, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts["hf_model"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # batched prompts are padded on the left, so every row's next token comes right after it
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def predict(self, context, model_input, params=None):
        import pandas as pd
        import torch

        settings = {**DEFAULT_PARAMS, **(params or {})}
        prompts = [p or self.tokenizer.eos_token for p in _prompts(model_input)]
        room = self.model.config.n_positions - int(settings["max_new_tokens"])
        if room < 1:
            raise ValueError(
                f"max_new_tokens {settings['max_new_tokens']} leaves no room for a prompt in the "
                f"model's context of {self.model.config.n_positions} tokens"
            )
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, truncation=True, max_length=room)
        if int(settings["seed"]) >= 0:
            torch.manual_seed(int(settings["seed"]))
        with torch.no_grad():
            out = self.model.generate(
                **batch,
                max_new_tokens=int(settings["max_new_tokens"]),
                pad_token_id=self.tokenizer.pad_token_id,
                **_sampling(settings),
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        continuations = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        texts = [prompt + more for prompt, more in zip(_prompts(model_input), continuations, strict=True)]
        return pd.DataFrame({"text": texts})


def _prompts(model_input) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        return [str(value) for value in model_input[column]]
    return [str(value) for value in model_input]


def _sampling(settings: dict) -> dict:
    if float(settings["temperature"]) == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": float(settings["temperature"]), "top_k": int(settings["top_k"])}


mlflow.models.set_model(TextGenerator())
