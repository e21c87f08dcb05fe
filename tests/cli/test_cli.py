"""The ``mambaseg`` command line: demo, models, backends."""

from mambaseg.cli.main import main


def test_demo_checks_the_scan_and_reports(capsys):
    assert main(["demo", "--length", "256", "--dim", "8"]) == 0
    out = capsys.readouterr().out
    assert "merge(flatten(x)) == 4x: True" in out and "OK, the chunked scan matches" in out


def test_models_table_lists_official_counts(capsys):
    assert main(["models", "--no-flops", "--in-channels", "3", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "mamba_unet" in out and "19,121,664" in out and "mamba_unet_test" not in out


def test_models_table_counts_flops_with_the_scan(capsys):
    assert main(["models", "--all", "--input-size", "64", "64"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("mamba_unet_test"))
    gflops, scan_share = (float(v) for v in line.split()[4:6])
    assert gflops > 0 and 0 < scan_share < 100


def test_models_table_survives_a_model_that_cannot_be_built(capsys, monkeypatch):
    """A model whose optional package is missing is listed with the reason; the other rows still print."""
    import mambaseg.cli.models as cli_models

    real = cli_models.create_model

    def failing(name, **kwargs):
        if name == "swin_unetr":
            raise ImportError("No module named 'monai'")
        return real(name, **kwargs)

    monkeypatch.setattr(cli_models, "create_model", failing)
    assert main(["models", "--no-flops", "--in-channels", "3", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "not built: ImportError: No module named 'monai'" in out and "19,121,664" in out


def test_backends(capsys):
    assert main(["backends"]) == 0
    assert "cpu: reference, chunked, numba\n" in capsys.readouterr().out
