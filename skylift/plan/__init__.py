"""The roadmap from measurements (issue 18): capacity knees, growth, limit dates, the plan.

Pure modules (``knee``, ``growth``, ``roadmap``, ``report``) take numbers and return
numbers; ``probe`` and ``stepload`` do the I/O (HTTP load, process and store reads)
for ``skylift capacity`` and ``skylift plan``.
"""
