"""Every numeric command-line option is range-checked: a bad value is one error line from
argparse (after its usage line), never a traceback or a silently accepted value."""

from __future__ import annotations

import pytest

from mirnet.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "99999"], "argument --port: 99999 is out of range (1 to 65535)"),
        (["serve", "--port", "0"], "argument --port: 0 is out of range (1 to 65535)"),
        (["serve", "--max-upload-mb", "-1"], "argument --max-upload-mb: -1 is out of range (must be over 0)"),
        (
            ["serve", "--max-megapixels", "nan"],
            "argument --max-megapixels: expected a finite number, got 'nan'",
        ),
        (["serve", "--max-megapixels", "inf"], "expected a finite number"),
        (["serve", "--queue", "0"], "argument --queue: 0 is out of range"),
        (["serve", "--workers", "1000"], "argument --workers: 1000 is out of range (1 to 64)"),
        (["serve", "--body-timeout", "0"], "argument --body-timeout: 0 is out of range (must be over 0)"),
        (["serve", "--pixel-budget", "-3"], "argument --pixel-budget"),
        (["serve", "--max-connections", "x"], "argument --max-connections: expected a whole number, got 'x'"),
        (["serve", "--tile", "-5"], "argument --tile: -5 is out of range (at least 0)"),
        (["enhance", "x.png", "--tile", "-1"], "argument --tile: -1 is out of range"),
        (["enhance", "x.png", "--max-megapixels", "-2"], "argument --max-megapixels: -2 is out of range"),
        (["enhance", "x.png", "--max-megapixels", "nan"], "expected a finite number"),
        (["evaluate", "--limit", "0"], "argument --limit: 0 is out of range (at least 1)"),
        (["enhance", "x.png", "--bits", "12"], "argument --bits: invalid choice"),
    ],
)
def test_numeric_options_out_of_range_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err


def test_numeric_options_in_range_are_accepted():
    from mirnet.cli import build_parser

    args = build_parser().parse_args(
        "serve --port 65535 --max-upload-mb 0.5 --max-megapixels 2 --queue 3 --workers 1 "
        "--body-timeout 2.5 --pixel-budget 12 --max-connections 10 --tile 0".split()
    )
    assert (args.port, args.max_upload_mb, args.queue, args.workers, args.body_timeout) == (
        65535,
        0.5,
        3,
        1,
        2.5,
    )
    assert (args.pixel_budget, args.max_connections, args.tile) == (12, 10, 0)
