"""The dataset pipeline shared by the API upload, both workers and the CLI."""

from ktoforge.dataset.examples import Example, iter_rows, load_examples, normalise
from ktoforge.dataset.formats import RowError
from ktoforge.dataset.render import ChatTemplate, RenderError, render_row, template_messages

__all__ = ["ChatTemplate", "Example", "RenderError", "RowError", "iter_rows", "load_examples", "normalise",
           "render_row", "template_messages"]
