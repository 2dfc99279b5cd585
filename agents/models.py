"""The model behind every agent: any OpenAI-compatible endpoint, or Hugging Face inference."""
from __future__ import annotations

from smolagents import InferenceClientModel, Model, OpenAIServerModel

from agents.settings import Settings

NO_MODEL_MESSAGE = (
    "No model is configured. Set MODEL_API_BASE, MODEL_ID and MODEL_API_KEY for any OpenAI-compatible "
    "endpoint (for example a local Ollama: MODEL_API_BASE=http://localhost:11434/v1 MODEL_ID=qwen2.5-coder), "
    "or HF_TOKEN for Hugging Face inference."
)


class ModelNotConfigured(RuntimeError):
    pass


def build_model(settings: Settings) -> Model:
    """A smolagents model with retries on 429/5xx/timeouts (the openai client's backoff honours Retry-After)."""
    if settings.model_api_base:
        return OpenAIServerModel(
            model_id=settings.model_id or "default",
            api_base=settings.model_api_base,
            api_key=settings.model_api_key or "not-needed",
            client_kwargs={"max_retries": settings.model_max_retries, "timeout": settings.model_timeout_s},
            retry=False,
        )
    if settings.hf_token:
        kwargs = {"model_id": settings.model_id} if settings.model_id else {}
        return InferenceClientModel(token=settings.hf_token, timeout=int(settings.model_timeout_s), **kwargs)
    raise ModelNotConfigured(NO_MODEL_MESSAGE)
