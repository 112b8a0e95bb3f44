"""Builds a database with Django itself, then prints what Django's ORM counts, as JSON.

usage: make_database.py DATABASE
       make_database.py --postgres HOST:PORT DATABASE [--use-tz true|false] [--time-zone ZONE]
       make_database.py --mysql HOST:PORT DATABASE [--use-tz true|false] [--time-zone ZONE]

The first form makes the SQLite file DATABASE; the second fills DATABASE, an existing, empty
database on the PostgreSQL server at HOST:PORT, as the superuser postgres (no password); the third
fills DATABASE, an existing, empty database on the MySQL or MariaDB server at HOST:PORT, as root
(no password, over TCP), through PyMySQL, in utf8mb4.
Runs the seed app's models through `makemigrations` and `migrate` (Django's defaults: USE_TZ on,
TIME_ZONE UTC, BigAutoField; --use-tz and --time-zone change the first two), writes transactions
through the ORM, and prints {"schema": [...], "counts": [[api, status, n], ...]} where the counts
are the seed view's 24-hour aggregate done by the ORM in SQL. On SQLite "schema" holds the CREATE
statements as the database keeps them; on PostgreSQL and MySQL, the statements of `sqlmigrate
apiMetrics 0001` (what schema/django-postgresql.sql and schema/django-mysql.sql record), each
without its semicolon. On MySQL one more API's name has characters outside the Basic Multilingual
Plane (four bytes in UTF-8, which MySQL's old `utf8` cannot hold).

On MySQL, Django stores a DateTimeField as `datetime(6)`, which holds no zone: with USE_TZ on the
ORM writes and compares UTC, with USE_TZ off the naive local time of TIME_ZONE. Django converts
in Python either way, so the server needs no time zone tables.
"""
import argparse
import datetime
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import django
from django.conf import settings

parser = argparse.ArgumentParser()
parser.add_argument("database", help="the SQLite file to make, or the server's database to fill")
server = parser.add_mutually_exclusive_group()
server.add_argument("--postgres", metavar="HOST:PORT", help="fill DATABASE on this PostgreSQL server")
server.add_argument("--mysql", metavar="HOST:PORT", help="fill DATABASE on this MySQL or MariaDB server")
parser.add_argument("--use-tz", choices=["true", "false"], default="true")
parser.add_argument("--time-zone", default="UTC")
arguments = parser.parse_args()

if arguments.postgres:
    host, port = arguments.postgres.rsplit(":", 1)
    database = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": arguments.database,
        "USER": "postgres",
        "HOST": host,
        "PORT": port,
    }
elif arguments.mysql:
    # Django's MySQL backend imports MySQLdb (mysqlclient, C); PyMySQL stands in for it. Django 5.2
    # refuses a MySQLdb older than 1.4.3 by its version_info, and PyMySQL 1.1 gives (2, 2, x) there
    # for this check, so nothing needs faking here.
    import pymysql

    pymysql.install_as_MySQLdb()
    host, port = arguments.mysql.rsplit(":", 1)
    database = {
        "ENGINE": "django.db.backends.mysql",
        "NAME": arguments.database,
        "USER": "root",
        "HOST": host,
        "PORT": port,
        "OPTIONS": {"charset": "utf8mb4"},
    }
else:
    database = {"ENGINE": "django.db.backends.sqlite3", "NAME": arguments.database}

# A settings module makes Django set the process's TZ to TIME_ZONE; settings.configure() does not,
# so do it here: with USE_TZ off, timezone.now() is the naive local time of that zone.
os.environ["TZ"] = arguments.time_zone
time.tzset()

workdir = Path(tempfile.mkdtemp())
shutil.copytree(Path(__file__).parent / "apiMetrics", workdir / "apiMetrics")
sys.path.insert(0, str(workdir))
settings.configure(
    INSTALLED_APPS=["apiMetrics"],
    DATABASES={"default": database},
    USE_TZ=arguments.use_tz == "true",
    TIME_ZONE=arguments.time_zone,
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402

from apiMetrics.models import API, Transaction, TransactionStatus  # noqa: E402

call_command("makemigrations", "apiMetrics", verbosity=0)
call_command("migrate", verbosity=0)

api_names = ["Mpesa Express", "Mpesa B2C", 'Airtel "Money"/Kenya ✓', "Mpesa Express", "Card \\ Charge"]
if connection.vendor == "mysql":
    api_names.append("Lipa 💳 na M-Pesa 🇰🇪")
apis = [
    API.objects.create(name=name, description=f"{name} payments", params={"shortcode": 174379 + n})
    for n, name in enumerate(api_names)
]
statuses = [
    TransactionStatus.objects.create(name=name, description=f"{name} transactions")
    for name in ["Pending", "Processing", "TimedOut", "Failed", "Pending"]
]

rng = random.Random(20261124)
now = timezone.now()
with transaction.atomic():
    for _ in range(3000):
        created = Transaction.objects.create(
            amount=Decimal(rng.randrange(1, 10_000_00)) / 100, api=rng.choice(apis), status=rng.choice(statuses)
        )
        # Spread over 48 hours, clear of the window's edge by six minutes either way, so the
        # agent's "now" and this script's need not agree to the microsecond.
        age = rng.choice([rng.uniform(0, 23.9), rng.uniform(24.1, 48)])
        modified = now - datetime.timedelta(hours=age, microseconds=rng.randrange(0, 2) * rng.randrange(1, 10**6))
        # update() sets the column without auto_now, as an old row's last change would have.
        Transaction.objects.filter(pk=created.pk).update(time_modified=modified)
    # A status change through save(): auto_now moves time_modified to now.
    changed = Transaction.objects.order_by("pk").first()
    changed.status = statuses[3]
    changed.save()

window_start = timezone.now() - datetime.timedelta(hours=24)
counts = (
    Transaction.objects.filter(time_modified__gte=window_start)
    .values("api__name", "status__name")
    .annotate(n=Count("id"))
    .order_by()
)
if connection.vendor == "sqlite":
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE name LIKE 'apiMetrics_%' AND sql IS NOT NULL ORDER BY type DESC, name"
        )
        schema = [row[0] for row in cursor.fetchall()]
else:
    migration_sql = call_command("sqlmigrate", "apiMetrics", "0001", stdout=io.StringIO(), no_color=True)
    schema = [
        line.removesuffix(";")
        for line in migration_sql.splitlines()
        if line and not line.startswith("--") and line not in ("BEGIN;", "COMMIT;")
    ]
print(
    json.dumps(
        {
            "schema": schema,
            "counts": [[row["api__name"], row["status__name"], row["n"]] for row in counts],
        }
    )
)
