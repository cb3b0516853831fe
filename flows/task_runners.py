"""Task runners for the pipeline flow: threads (default), Dask, or Ray, chosen by run.task_runner."""

from __future__ import annotations

from moaa.config import RunSettings
from moaa.errors import ConfigError


def make_task_runner(run: RunSettings):
    if run.task_runner == "threads":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=run.max_parallel_shards)
    if run.task_runner == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise ConfigError("run.task_runner=dask needs prefect-dask: pip install 'moaa[dask]'") from None
        if run.address:
            return DaskTaskRunner(address=run.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": run.workers, "threads_per_worker": 1, "processes": True})
    try:
        from prefect_ray import RayTaskRunner
    except ImportError:
        raise ConfigError("run.task_runner=ray needs prefect-ray: pip install 'moaa[ray]'") from None
    return RayTaskRunner(address=run.address) if run.address else RayTaskRunner()
