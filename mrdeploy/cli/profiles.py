"""``mrdeploy profiles plan --sizes-from DIR|FILE --max-profiles K -o profiles.yaml``."""

from __future__ import annotations

import click


@click.group("profiles")
def command() -> None:
    """Resolution profiles: plan them from the sizes your data has."""


@command.command("plan")
@click.option("--sizes-from", "sizes_from", required=True, type=click.Path(exists=False),
              help="A folder of images (read recursively, headers only) or a text file of HxW [COUNT] lines.")
@click.option("--max-profiles", type=click.IntRange(min=1), default=3, show_default=True, help="Plan for K = 1..this many profiles.")
@click.option("--divisor", type=click.IntRange(min=1), help="Round sizes up to a multiple of this (default: the model's, else 1).")
@click.option("--min-size", help="Smallest valid size (N or HxW): smaller inputs are padded up to it.")
@click.option("--max-size", help="Largest valid size (N or HxW): larger inputs are reported as skipped.")
@click.option("--model", "model", type=click.Path(dir_okay=False), help="Take divisor and size range from this ONNX model's metadata.")
@click.option("--mode", type=click.Choice(["static", "ranged"]), default="static", show_default=True,
              help="static: profiles at the planned sizes (the runtime pads to them); ranged: each spans the sizes it serves.")
@click.option("--input", "input_name", help="Models with several image inputs: the input whose sizes are planned.")
@click.option("--with", "others", multiple=True,
              help="Models with several image inputs: the spec of each other input, e.g. template:112-128@128.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the chosen profiles here (YAML) for build-engine --profiles.")
@click.option("--force", is_flag=True, help="Replace another mrdeploy output file at -o (never a file mrdeploy did not write).")
def plan(sizes_from, max_profiles, divisor, min_size, max_size, model, mode, input_name, others, output, force):
    """Propose profiles that minimize the padded pixels of your data's sizes."""
    import yaml

    from mrdeploy._atomic import write_text_atomic
    from mrdeploy.planning import plan_profiles
    from mrdeploy.planning import sizes_from as read_sizes

    def size(v):
        if v is None:
            return None
        h, _, w = str(v).lower().partition("x")
        try:
            return (int(h), int(w or h))
        except ValueError:
            raise click.BadParameter(f"expected N or HxW, got {v!r}") from None

    if output is not None:
        from mrdeploy._atomic import check_output

        check_output(output, "profiles", force, directory=False)  # before any work
    lo, hi = size(min_size), size(max_size)
    if model:
        from mrdeploy.errors import ProfileError
        from mrdeploy.exporter.onnx_model import read_model

        info = read_model(model).info
        names = [i.name for i in info.inputs]
        if len(names) > 1:
            if input_name not in names:
                raise ProfileError(
                    f"{model} has {len(names)} image inputs ({', '.join(names)}): name the planned one with "
                    f"--input and give the others with --with (e.g. --input {names[-1]} --with {names[0]}:SPEC), "
                    f"got --input {input_name!r}"
                )
            given = {o.split(":", 1)[0] for o in others}
            missing = [n for n in names if n != input_name and n not in given]
            if missing:
                raise ProfileError(f"--with: expected a spec for each other input {missing}, e.g. --with {missing[0]}:224")
        elif input_name is None:
            others = ()
        first = info.input(input_name) if input_name else info.inputs[0]
        divisor = divisor or first.divisor
        lo = lo or first.min_size
        hi = hi or first.max_size
    sizes = read_sizes(sizes_from)
    result = plan_profiles(sizes, max_profiles, divisor=divisor or 1, min_size=lo, max_size=hi, mode=mode)
    click.echo(result.table())
    for note in result.notes:
        click.echo(f"note: {note}")
    chosen = result.chosen
    click.echo(
        f"chosen: K={chosen.k} ({chosen.method}), expected padded pixels {chosen.padded_fraction:.1%}: "
        + " ".join(f"--profile {p}" for p in result.profile_strings(input_name=input_name, others=others))
    )
    if output:
        text = "# written by `mrdeploy profiles plan`; use with `mrdeploy build-engine --profiles FILE`\n"
        text += yaml.safe_dump(result.to_file_dict(input_name, others), sort_keys=False)
        write_text_atomic(output, text, "profiles", force)
        click.echo(f"wrote {output}")
