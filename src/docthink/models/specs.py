"""Recipe-level descriptions of models. A spec is data (YAML); `docthink.models.build_model` turns
it into a `ChatModel`. API keys never live in a resolved recipe: a spec names the environment
variable that holds the key, and a key written inline is masked whenever the recipe is dumped."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer

from docthink.models.local import LocalModelSpec


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointSpec(_Spec):
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="environment variable holding the key (none sent if unset)"
    )
    api_key: SecretStr | None = Field(
        None, description="inline key; prefer api_key_env. Never written to run records"
    )
    max_concurrency: int = Field(64, ge=1, description="requests in flight on this endpoint")

    @field_serializer("api_key")
    def _mask(self, key: SecretStr | None) -> str | None:
        return None if key is None else "**********"


class ImageTokens(_Spec):
    """How the model's processor counts an image: Qwen-VL's rule (resize each side to a multiple of
    `token_pixels` keeping the pixel count within [min_pixels, max_pixels], then one token per
    token_pixels x token_pixels square, plus the two vision delimiters). The defaults are
    Qwen2.5-VL's processor; Qwen3-VL's: 32, 65536, 16777216."""

    token_pixels: int = Field(28, ge=1, description="side of the square one token covers: the "
                              "patch size times the merge size (Qwen2.5-VL 14 x 2)")
    min_pixels: int = Field(3136, ge=1, description="smaller images are scaled up to this")
    max_pixels: int = Field(12845056, ge=1, description="larger images are scaled down to this")


class ServerLimits(_Spec):
    images_per_prompt: int | None = Field(
        None, ge=1, description="images the server takes in one request (vLLM: "
        "--limit-mm-per-prompt); null: not stated (not checked)"
    )
    max_model_len: int | None = Field(
        None, ge=1, description="prompt plus output tokens of one request (vLLM: "
        "--max-model-len); null: read from the server's /v1/models where it says"
    )
    image_tokens: ImageTokens = Field(
        default_factory=ImageTokens, description="how the model counts an image's tokens"
    )


class OpenAIModelSpec(_Spec):
    kind: Literal["openai"] = "openai"
    model: str = Field(description="model name as the server knows it")
    endpoints: tuple[EndpointSpec, ...] = Field(min_length=1)
    timeout_s: float = Field(300.0, gt=0, description="per attempt")
    max_retries: int = Field(5, ge=0, description="transport errors, 429 and 5xx")
    backoff_s: float = Field(0.5, gt=0, description="first backoff; doubles, with jitter")
    max_backoff_s: float = Field(30.0, gt=0)
    max_validation_retries: int = Field(
        2, ge=0, description="re-asks when structured output does not parse or validate"
    )
    health_interval_s: float = Field(
        5.0, gt=0, description="several endpoints: seconds between health checks (GET "
        "base_url/models); one that fails a check or drops a connection gets no request until "
        "it passes one"
    )
    health_timeout_s: float = Field(5.0, gt=0, description="a health check slower than this fails")
    limits: ServerLimits = Field(
        default_factory=ServerLimits, description="what the server takes: a recipe that "
        "exceeds it is refused before the first request"
    )


class TeacherSpec(_Spec):
    kind: Literal["teacher"] = "teacher"
    similarity: Literal["bm25", "minilm"] = Field(
        "bm25",
        description="bm25: lexical only; minilm: adds all-MiniLM-L6-v2 embeddings "
        "(needs the 'embed' extra)",
    )


ModelSpec = Annotated[OpenAIModelSpec | TeacherSpec | LocalModelSpec, Field(discriminator="kind")]
# A model that needs no corpus text layer: what can judge (the offline teacher cannot).
ServedModelSpec = Annotated[OpenAIModelSpec | LocalModelSpec, Field(discriminator="kind")]
