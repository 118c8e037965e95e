"""The admin control room: the model admins and their actions (``model_admins``), the forms they
show (``forms``) and what their pages show, shaped for the templates (``presenters``). Thin
edges: they call ``experiments.services.runs``, ``experiments.selectors`` and ``experiments.reports``.
"""

from experiments.admin import model_admins  # noqa: F401 - registers the model admins (Django's autodiscover imports us)
