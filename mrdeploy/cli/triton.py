"""``mrdeploy triton BUNDLE -o REPO``: a Triton model repository; ``mrdeploy triton --serve REPO``: serve it."""

from __future__ import annotations

import time

import click

from mrdeploy.errors import InputError, MrdeployError


@click.command("triton")
@click.argument("bundle", type=click.Path(), required=False)
@click.option("--out", "-o", type=click.Path(), help="Repository directory to write.")
@click.option("--embedded", is_flag=True, help="Only the front model, running mrdeploy's runtime itself "
              "(for Triton builds without an ONNX Runtime backend).")
@click.option("--instances", default=1, show_default=True, type=int, help="instance_group count of every model.")
@click.option("--kind", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True,
              help="instance_group kind (KIND_CPU / KIND_GPU).")
@click.option("--max-batch", type=int, help="max_batch_size of the per-profile models (default: each "
              "profile's batch max).")
@click.option("--max-delay-ms", default=2.0, show_default=True, help="Dynamic batching queue delay.")
@click.option("--threads", type=int, help="Intra-op threads per engine.")
@click.option("--force", is_flag=True, help="Replace REPO when it is a repository mrdeploy wrote.")
@click.option("--serve", "serve", type=click.Path(), metavar="REPO", help="Serve REPO with tritonserver on "
              "127.0.0.1 until Ctrl-C.")
@click.option("--http-port", type=int, default=8000, show_default=True, help="With --serve.")
@click.option("--grpc-port", type=int, default=8001, show_default=True, help="With --serve.")
@click.option("--check", is_flag=True, help="With --serve: send every profile's min/opt/max size and sizes "
              "between them over HTTP and gRPC, compare with the Runner, print the table and stop.")
def command(bundle, out, embedded, instances, kind, max_batch, max_delay_ms, threads, force, serve,
            http_port, grpc_port, check) -> None:
    """Write a Triton model repository for BUNDLE (-o REPO), or serve one (--serve REPO)."""
    if serve and (bundle or out):
        raise InputError("give BUNDLE -o REPO to write a repository, or --serve REPO to serve one, not both")
    if serve:
        _serve(serve, http_port, grpc_port, check)
        return
    if not bundle or not out:
        raise InputError("expected BUNDLE and -o REPO (or --serve REPO)")
    from mrdeploy.triton import write_repository

    repo = write_repository(bundle, out, instances=instances, kind=kind, max_batch=max_batch,
                            max_delay_ms=max_delay_ms, embedded=embedded, threads=threads, overwrite=force)
    mode = "embedded (the front model runs the bundle)" if repo.embedded else "front model + one model per profile"
    click.echo(f"wrote {repo.path}: {mode}")
    for m in repo.models:
        click.echo(f"  {m}/config.pbtxt")
    click.echo(f"clients call model {repo.front!r}; serve it with: mrdeploy triton --serve {repo.path}")


def _serve(path, http_port, grpc_port, check) -> None:
    from mrdeploy.triton import TritonServer, read_repository
    from mrdeploy.triton.check import check_served

    repo = read_repository(path)
    server = TritonServer(path, http_port=http_port, grpc_port=grpc_port)
    click.echo(f"starting tritonserver ({server.binary}) on {repo.path}")
    with server:
        click.echo(f"ready: model {repo.front!r} at http://{server.http_url} and grpc {server.grpc_url}")
        if check:
            rows = check_served(server, repo)
            click.echo(f"{'protocol':<9} {'size':>9}  {'profile':<10} {'max abs err vs Runner':>22}")
            for r in rows:
                click.echo(f"{r.protocol:<9} {r.size:>9}  {r.profile:<10} {r.max_abs_err:22.3g}")
            worst = max(r.max_abs_err for r in rows)
            click.echo(f"{len(rows)} requests, worst {worst:.3g} (<= 1e-5 required); stopping the server")
            if worst > 1e-5:
                raise InputError(f"the served outputs differ from the Runner's by {worst:.3g} (> 1e-5)")
            return
        click.echo("Ctrl-C stops it")
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            click.echo("stopping")
            return
        raise MrdeployError(f"tritonserver exited by itself:\n{server.log_tail()}")
