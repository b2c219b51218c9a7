"""Sphinx configuration for skae's documentation."""

import os
import warnings

from sklearn.exceptions import ConvergenceWarning

import skae

project = "skae"
author = "The skae developers"
copyright = "2026, The skae developers"
release = skae.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "examples/README.rst"]
default_role = "literal"

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": True}
# numpydoc writes the members table itself; autosummary stubs stay short.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "sklearn": ("https://scikit-learn.org/stable", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
}
# The CI machines build offline: intersphinx inventories are fetched only when
# SKAE_DOCS_ONLINE is set, so a missing network never fails the build.
if not os.environ.get("SKAE_DOCS_ONLINE"):
    intersphinx_mapping = {}
    extensions.remove("sphinx.ext.intersphinx")

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "reference_url": {"skae": None},
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("skae",),
    "show_memory": False,
    "min_reported_time": 1,
    "image_scrapers": ("matplotlib",),
}

html_theme = "pydata_sphinx_theme"
html_title = f"skae {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []

# The examples run with Agg; matplotlib's non-GUI warning on plt.show is noise.
warnings.filterwarnings("ignore", category=UserWarning, message=".*non-interactive.*")
# The gallery trains for the epochs each example chose.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

# Two inherited scikit-learn methods cite labels of scikit-learn's own user
# guide, which do not resolve here; their pages document them in full.
_SKLEARN_ONLY_MEMBERS = {"get_metadata_routing", "set_output"}


def _skip_member(app, what, name, obj, skip, options):
    return True if name in _SKLEARN_ONLY_MEMBERS else None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
