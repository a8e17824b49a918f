"""The ``legato`` command line: the Typer application, assembled from :mod:`legato.commands`.

Each command is a thin function in a ``legato.commands`` module that parses its
options and calls the library; this module only names and orders them. Heavy
libraries (GalSim, TensorFlow, MLflow) are imported inside the commands, so
``legato --help`` stays fast.
"""

from __future__ import annotations

import typer

from legato.commands import (
    classical,
    cluster,
    crb,
    evaluate_production,
    evaluation,
    history,
    ingest,
    inspect,
    predict,
    realism,
    realistic,
    registry,
    score_realistic,
    serving,
    simulation,
    team,
    train_production,
    training,
    validation,
)
from legato.commands.common import one_line_errors

app = typer.Typer(
    name="legato",
    help="Galaxy structure (single-Sérsic mag, re, n, q) from HST/CANDELS-like stamps with deep learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ingest_app = typer.Typer(
    help="Ingest real data (GALFIT blocks, or a mosaic with a GALFIT catalogue) as a labelled stamp set.", no_args_is_help=True
)
history_app = typer.Typer(
    help="Ship the MLflow runs and registry behind the published artifacts; recreate them in a store.", no_args_is_help=True
)
team_app = typer.Typer(
    help="A shared MLflow tracking server on PostgreSQL for a team: the database, then the server (docs/scale.md).",
    no_args_is_help=True,
)

#: (group, command name, function), in the order ``legato --help`` lists them
COMMANDS = (
    (app, "simulate", simulation.simulate),
    (app, "train", training.train),
    (app, "evaluate", evaluation.evaluate),
    (app, "fit-classical", classical.fit_classical),
    (app, "label-realistic", realistic.label_realistic),
    (app, "assemble-realistic", realistic.assemble_realistic),
    (ingest_app, "galfit", ingest.ingest_galfit),
    (ingest_app, "mosaic", ingest.ingest_mosaic_command),
    (app, "adapt", training.adapt),
    (app, "real-check", evaluation.real_check_command),
    (app, "register", registry.register),
    (app, "promote", registry.promote_command),
    (app, "rollback", registry.rollback),
    (app, "models", registry.list_models),
    (app, "serve", serving.serve),
    (app, "validate", validation.validate),
    (app, "build-reference", validation.build_reference_command),
    (app, "calibrate-noise", simulation.calibrate_noise),
    (app, "make-psf", simulation.make_psf),
    (app, "predict", predict.predict),
    (app, "spark-cluster", cluster.spark_cluster),
    (app, "train-production", train_production.train_production_command),
    (app, "evaluate-production", evaluate_production.evaluate_production_command),
    (app, "track-estimator", registry.track_estimator_command),
    (app, "route", registry.route_command),
    (app, "deblend", registry.deblend_command),
    (app, "refine", training.refine),
    (app, "crb", crb.crb_command),
    (app, "realism", realism.realism_command),
    (app, "score-realistic", score_realistic.score_realistic_command),
    (app, "inspect", inspect.inspect_command),
    (history_app, "export", history.export_command),
    (history_app, "import", history.import_command),
    (team_app, "db", team.db),
    (team_app, "server", team.server),
    (app, "where", history.where),
)

for group, name, function in COMMANDS:
    group.command(name)(one_line_errors(function))
app.add_typer(ingest_app, name="ingest")
app.add_typer(history_app, name="history")
app.add_typer(team_app, name="team")
