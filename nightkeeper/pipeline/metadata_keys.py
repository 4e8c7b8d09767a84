"""The materialization-metadata keys that sensors read: the contract between the steps that write a night's
metadata and the readers that decide from it (the Dagster sensors in ``jobs/``, which read the event log, and the
backtest's simulated sensors, which read the steps' ``StepResult.metadata``). Each key is written by one step,
named beside it here; writers and readers import it from here and never spell it out.

Other metadata (counts, previews, descriptions) is for people in the UI and has no reader to agree with.
"""

from __future__ import annotations

from typing import Final

NONE: Final = "none"
"""The value of ``SHADOW_CHALLENGER`` and ``SHADOW_ROLLOUT_ACTION`` on a night without a challenger."""

# shadow_scores (nightkeeper.pipeline.nightly.shadow_night), read by the rollout sensor and the retrain policy
SHADOW_NIGHT: Final = "night"
SHADOW_CHALLENGER: Final = "challenger_version"
SHADOW_STAGE: Final = "stage"
SHADOW_ROLLOUT_ACTION: Final = "rollout_action"
SHADOW_ROLLOUT_NEXT_STAGE: Final = "rollout_next_stage"
SHADOW_ROLLOUT_REASON: Final = "rollout_reason"

# alerts (nightkeeper.pipeline.monitoring.alerts_night), read by the retrain and alert-outbox sensors
ALERTS_OPEN: Final = "open_alert_categories"
"""A list with one entry per open alert, each a dict of the three keys below."""
OPEN_ALERT_ID: Final = "alert_id"
OPEN_ALERT_CATEGORY: Final = "category"
OPEN_ALERT_OPENED_NIGHT: Final = "opened_night"
ALERTS_WEBHOOK_PENDING: Final = "webhook_pending"
ALERTS_WEBHOOK_DELIVERED: Final = "webhook_delivered"
"""The step counts the webhook deliveries as they stand; the asset rewrites both after posting (``webhook.deliver``)."""

# candidate_model (nightkeeper.pipeline.lifecycle.train_candidate), read by the retrain policy
CANDIDATE_STATUS: Final = "status"
CANDIDATE_AS_OF: Final = "as_of"

# candidate_evaluation (nightkeeper.pipeline.lifecycle.evaluate_candidate), read by the shadow-start sensor
EVALUATION_DECISION: Final = "decision"
EVALUATION_VERSION: Final = "version"
EVALUATION_AS_OF: Final = "as_of"
