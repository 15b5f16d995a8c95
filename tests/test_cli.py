"""The verb table: every verb's function takes exactly the arguments its parser declares."""

import argparse
import inspect

from benchmark.cli import VERBS, build_parser, resolve_target


def _leaf_parsers(parser: argparse.ArgumentParser):
    """(name, parser) of every parser that runs a function (prepare has one per dataset)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {n}".strip(), p) for n, p in _leaf_parsers(sub))
            return
    yield "", parser


def test_every_verb_maps_to_a_function_with_the_parsers_arguments():
    parser = build_parser()
    names = {v.name for v in VERBS}
    checked = 0
    for name, leaf in _leaf_parsers(parser):
        assert name.split()[0] in names
        target = leaf.get_default("_target")
        function = resolve_target(target)
        dests = {a.dest for a in leaf._actions if a.dest not in ("help",) and not a.dest.startswith("_")}
        params = inspect.signature(function).parameters
        assert dests == set(params), (name, target, dests ^ set(params))
        required = {p for p, v in params.items() if v.default is inspect.Parameter.empty}
        assert required <= dests, (name, required - dests)
        checked += 1
    assert checked == len(VERBS) + 1  # prepare has two datasets


def test_library_functions_see_no_namespace(capsys):
    from benchmark.cli import main

    assert main(["list", "--filter", "*voc12aug*"]) == 0
    out = capsys.readouterr().out
    assert out.count("voc12aug") == 4
