"""``ferkit serve``: an HTTP API (FastAPI + uvicorn) and a webcam page over :class:`ferkit.inference.pipeline.Analyzer`.

    from ferkit.inference.settings import AnalyzerSettings
    from ferkit.serve import ServeConfig, create_app
    app = create_app(ServeConfig(AnalyzerSettings("fer_minixception")))

Importing this package needs no extra; building or running the app needs ``pip install 'ferkit[serve]'``.
"""

from ferkit.serve.app import BackgroundServer, ServeConfig, create_app, run_server

__all__ = ["BackgroundServer", "ServeConfig", "create_app", "run_server"]
