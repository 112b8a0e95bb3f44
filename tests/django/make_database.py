"""Builds a database with Django itself, then prints what Django's ORM counts, as JSON.

usage: make_database.py DATABASE

Runs the seed app's models through `makemigrations` and `migrate` (Django's defaults: USE_TZ on,
BigAutoField), writes transactions through the ORM, and prints
{"schema": [the CREATE statements], "counts": [[api, status, n], ...]} where the counts are
the seed view's 24-hour aggregate done by the ORM in SQL.
"""
import datetime
import json
import random
import shutil
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import django
from django.conf import settings

database = sys.argv[1]
workdir = Path(tempfile.mkdtemp())
shutil.copytree(Path(__file__).parent / "apiMetrics", workdir / "apiMetrics")
sys.path.insert(0, str(workdir))
settings.configure(
    INSTALLED_APPS=["apiMetrics"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
    USE_TZ=True,
    TIME_ZONE="UTC",
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

apis = [
    API.objects.create(name=name, description=f"{name} payments", params={"shortcode": 174379 + n})
    for n, name in enumerate(
        ["Mpesa Express", "Mpesa B2C", 'Airtel "Money"/Kenya ✓', "Mpesa Express", "Card \\ Charge"]
    )
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
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT sql FROM sqlite_master WHERE name LIKE 'apiMetrics_%' AND sql IS NOT NULL ORDER BY type DESC, name"
    )
    schema = [row[0] for row in cursor.fetchall()]
print(
    json.dumps(
        {
            "schema": schema,
            "counts": [[row["api__name"], row["status__name"], row["n"]] for row in counts],
        }
    )
)
