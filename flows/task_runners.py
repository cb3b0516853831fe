"""Task runners for the pipeline flow: threads (default), Dask, or Ray, chosen by run.task_runner.

Dask and Ray connect to `run.address` when it is set; otherwise Dask starts a LocalCluster of
`run.workers` processes, and Ray a local node of `run.workers` CPUs (flows.ray_local).
"""

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
    if run.address:
        return RayTaskRunner(address=run.address)
    from flows.ray_local import local_ray_address  # a node of run.workers CPUs that dies with this process

    return RayTaskRunner(address=local_ray_address(run.workers))
