"""Alembic environment: migrations run on the connection askfirst hands over."""

from alembic import context

from askfirst.ledger.tables import described, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,
    include_name=described,
)
with context.begin_transaction():
    context.run_migrations()
