"""nbgrader configuration of the mamlkit homework: run nbgrader from this folder (see README.md)."""

c = get_config()  # noqa: F821 (nbgrader provides it)

c.CourseDirectory.course_id = "mamlkit"
# the stub that replaces each ### BEGIN SOLUTION … ### END SOLUTION region in the student version
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# every assignment runs in seconds on a laptop CPU; a hung submission is stopped after 2 minutes
c.Execute.timeout = 120
