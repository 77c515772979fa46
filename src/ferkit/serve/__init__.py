"""``ferkit serve``: an HTTP API (FastAPI + uvicorn) and a webcam page over :class:`ferkit.inference.pipeline.Analyzer`.

    from ferkit.serve.app import ServeConfig, create_app
    app = create_app(ServeConfig(models=["fer_minixception"], det_size=640))
"""
