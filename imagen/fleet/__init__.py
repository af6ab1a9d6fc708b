"""The Celery GPU fleet (`IMAGEN_EXECUTOR=celery`, docs/fleet.md): the Celery app and task backend
(`celery_app.py`), the workers' registry in Redis (`registry.py`), where a job's ticket goes (`routing.py`), and the
GPU worker (`worker.py`). Celery and redis are the `fleet` extra: nothing outside this package imports them."""
