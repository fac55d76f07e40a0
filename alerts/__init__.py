"""Alerts that reach people: the alert rows (:mod:`store.alerts`) delivered through apprise to the alert URLs.

The causes are recorded where they happen, in the lower layers, in the event's own transaction (a budget's
alert line in the ledger, a cap in the router, a breaker transition, a task that failed on every rung); this
package delivers them, off the task path: :mod:`alerts.beat` runs :func:`alerts.sender.run_once` from celery
beat, and adds the daily spend report (:mod:`alerts.daily`).
"""
