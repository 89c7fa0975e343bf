"""``GET /v1/models``: the model folders this server can see."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..deps import Service
from ..schemas import LanguageModel, ModelInfo, ModelList

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList,
            summary="The model folders this server can see, the default and the loaded one")
async def models(request: Request, service: Service) -> ModelList:
    """Every model folder with its one-line description; which is the default and which is loaded."""
    from ...model_folder import DEFAULT_MODEL_NAME, available_models, describe_model

    loaded = service.model_name if service.loaded else None
    pool = request.app.state.work_pool
    found = await pool.run(lambda: [(p.name, describe_model(p)) for p in available_models()])
    return ModelList(loaded=loaded, default=DEFAULT_MODEL_NAME,
                     models=[ModelInfo(name=name, description=text, default=name == DEFAULT_MODEL_NAME,
                                       loaded=name == loaded) for name, text in found],
                     languages=await pool.run(_languages, service), max_languages=service.max_languages)


def _languages(service) -> list[LanguageModel]:
    """Each caption language with the folder that captions it, and whether it is loaded now."""
    from ...languages import LANGUAGES
    from ...model_folder import CheckpointError, default_model_dir

    loaded = service.loaded_languages
    default = service.default_lang
    rows = []
    for code, spec in LANGUAGES.items():
        if code == default and service.loaded:
            model = loaded[code]
        else:
            try:
                model = default_model_dir(code).name
            except CheckpointError:
                model = None
        rows.append(LanguageModel(lang=code, name=spec.name, model=model, default=code == default,
                                  loaded=code in loaded))
    return rows
