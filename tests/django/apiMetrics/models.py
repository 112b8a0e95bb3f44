"""The seed app's models, as its README describes them (app label apiMetrics)."""
from django.db import models


class API(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField()
    params = models.JSONField()


class TransactionStatus(models.Model):
    name = models.CharField(max_length=100)
    description = models.TextField()


class Transaction(models.Model):
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    api = models.ForeignKey(API, on_delete=models.CASCADE)
    status = models.ForeignKey(TransactionStatus, on_delete=models.CASCADE)
    time_created = models.DateTimeField(auto_now_add=True)
    time_modified = models.DateTimeField(auto_now=True)
