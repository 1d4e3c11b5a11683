#!/usr/bin/env bash
# System packages the project needs on Debian/Ubuntu: Java 17 for Spark and Kafka; Maven to fetch the jars of
# jvm/pom.xml once (Apache Kafka, Spark's Kafka connector, the PostgreSQL JDBC driver); as root, `acl` so the embedded
# PostgreSQL (run as an unprivileged user) can be given traverse-only access to the project folder; chromium
# for the browser test of the reports.
set -euo pipefail
need=()
if ! command -v java >/dev/null 2>&1; then need+=(openjdk-17-jre-headless); fi
if ! command -v mvn >/dev/null 2>&1; then need+=(maven); fi
if [ "$(id -u)" = 0 ] && ! command -v setfacl >/dev/null 2>&1; then need+=(acl); fi
# headless Chromium for the browser test of the HTML reports (tests/test_notebooks.py)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then need+=(chromium); fi
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "Please install: ${need[*]} (for example: sudo apt-get install -y ${need[*]})" >&2
  exit 1
fi
apt-get install -y "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y "${need[@]}"; }
