"""Humans in the loop: a nightly review queue of uncertain answers, a CSV round trip with reviewers, and the labels
they give, stored with provenance so they can join the training data. One module per job:

* ``queue``: ``build_review_queue`` picks, from the night's outcomes, the model answers closest to the decision
  threshold (most uncertain first) and then the quarantined rows a person could decide, up to a nightly capacity;
  ``review_stats`` measures the review load and the reviewers' agreement with the model.
* ``files``: the CSV round trip. ``export_review_csv`` writes the queue with empty ``label``, ``reviewer`` and
  ``note`` columns; reviewers fill it in; ``import_review_file`` reads it back **without ever raising on the file's
  content**: each good row is accepted, each bad row is rejected with the reason, rows with an empty label are
  skipped (not reviewed yet), and a malformed file (not a CSV, required columns missing) is rejected as a whole
  with the reason. ``write_rejects`` writes the rejections next to the input file for the reviewer to fix.
* ``storage``: the ``review`` schema. ``store_queue`` writes a night's queue to ``review.queue`` (re-running a night
  replaces it); ``commit_import`` stores, in one transaction, the accepted labels in ``review.labels``
  (idempotently by (entity_id, label), so importing the same file twice adds nothing) and the rejections in
  ``review.rejects``, and only after the commit writes the rejects file.

Every function is a plain function of its arguments (the warehouse connection included); nothing here imports
Dagster. Its settings are ``ProjectConfig.review`` (``nightkeeper.config.ReviewConfig``).
"""
