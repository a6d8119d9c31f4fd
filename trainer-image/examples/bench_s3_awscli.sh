#!/usr/bin/env bash
# Installs the reference S3 client of examples/bench_s3.rs (the AWS CLI) into
# its own virtualenv, separate from the project's Python reference venv.
#
# Usage: trainer-image/examples/bench_s3_awscli.sh [VENV_DIR]   (default /tmp/megatron-awscli)
set -euo pipefail
venv=${1:-/tmp/megatron-awscli}
if [[ ! -x $venv/bin/aws ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet awscli
fi
"$venv/bin/aws" --version
echo "AWS CLI ready: export AWS_CLI=$venv/bin/aws"
