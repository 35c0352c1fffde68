"""The names attnbench gives what it keeps in MLflow and beside results: tags, artifacts, link files."""

PARENT_FILE = "mlflow_parent_run.json"  # in the sweep folder: the parent run, for workers and `attnbench sync`
RUN_FILE = "mlflow_run.json"  # in a job folder: the run of that job, for `attnbench sync`
RESULT_ID = "attnbench.result_id"  # the result a run holds: `attnbench sync` uploads each result once
UPLOAD_OF = "attnbench.upload_of"  # on a run `attnbench sync` creates, from the start: found again if it stops
COMMAND = "attnbench.command"  # on a parent: the command that ran the sweep (`attnbench compare --rerun`)
SAMPLES_FILE = "samples.json"  # a job's raw samples: the report and `attnbench compare` judge noise from them
PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "sweep.key"  # every sweep's parent run has it
