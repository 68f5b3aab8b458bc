"""Verifier: mechanically checkable wrong answers, flagged with evidence; right or ambiguous ones not."""

from __future__ import annotations

import numpy as np
import pytest

from itaudit.audit.verifier import Verifier, check_code, check_format, check_math, matches, verify
from itaudit.errors import ItauditError


@pytest.mark.parametrize("ins, inp, res, expected, answer", [
    ("Calculate the average of [2, 4, 5, 7, 8].", "", "The average of [2, 4, 5, 7, 8] is 5.4.", "5.2", "5.4"),
    ("Find the median among the following set of numbers: 7,5,3,4", "", "The median is 4.", "4.5", "4"),
    ("Compute the average of 1, 4, 7, and 10.", "", "The average of 1, 4, 7, and 10 is 6.", "5.5", "6"),
    ("Calculate the following equation: 8 * (25 + 7)", "", "216", "256", "216"),
    ("Determine if 3 is a prime number.", "", "No, 3 is not a prime number.", "3 is prime", "3 is not prime"),
    ("Find the 34th Fibonacci number.", "", "233", "3524578 or 5702887", "233"),
    ("Convert 4 km into miles.", "", "4 km is equal to 3.1 miles.", "2.49", "3.1"),
    ("Sort the following numbers from smallest to largest.", "8, 4, 5, 2", "2, 5, 4, 8", "2, 4, 5, 8", "2, 5, 4, 8"),
])
def test_wrong_answers_flagged_with_evidence(ins, inp, res, expected, answer) -> None:
    got = check_math(ins, inp, res)
    assert got is not None and got["expected"] == expected and got["answer"] == answer
    assert expected in got["message"] and answer in got["message"]


@pytest.mark.parametrize("ins, inp, res", [
    ("Calculate the average of [2, 4, 5, 7, 8].", "", "The average of [2, 4, 5, 7, 8] is 5.2."),
    ("Compute the mean of the values in the given list.", "[2, 3, 4, 5, 6, 7]", "The mean is 4.5."),
    ("Calculate the average value from the given numbers", "2, 4, 6, 9", "The average is 5.3."),   # rounded
    ("What is the greatest common factor of 20 and 45?", "", "The greatest common factor of 20 and 45 is 5."),
    ("Find the factorial of 24", "", "It is 620448401733239439360000."),
    ("List all the prime numbers between 5 and 20.", "", "5, 7, 11, 13, 17, 19"),   # bound included
    ("Sort the following numbers from smallest to greatest: 8, 4, 5, 2", "", "2, 4, 5, 8"),
    ("Convert 20 degrees Celsius to Fahrenheit.", "", "20°C is 68°F."),
])
def test_right_answers_not_flagged(ins, inp, res) -> None:
    assert check_math(ins, inp, res) is None


@pytest.mark.parametrize("ins, inp, res", [
    ("Calculate the average of the 4 student's grades.", "87, 89, 92, 95", "90.5"),   # another number in the task
    ("Calculate the weighted average of 2, 4 and 6.", "", "5"),                       # not a plain mean
    ("Find the mean of the given array of numbers.", "[1, 4, 8]", "def mean(a):\n    return sum(a) / len(a)"),
    ("Sort these items by size.", "Apple, orange, banana", "Banana, orange, apple"),  # no checkable order
    ("What is the average temperature of Earth?", "", "The average temperature of Earth is 15°C."),
    ("Calculate the mean of 2, 4 and 9.", "", "Adding them gives 15, divided by three."),   # no stated answer
])
def test_ambiguous_tasks_not_flagged(ins, inp, res) -> None:
    assert check_math(ins, inp, res) is None


def test_number_precision() -> None:
    assert matches("5.2", 5.2) and matches("5.25", 5.25) and matches("5.3", 5.25) and matches("5.2", 5.25)
    assert matches("5", 5.25) and not matches("4", 4.5) and not matches("5", 4.5) and not matches("5.4", 5.2)


def test_python_code_that_does_not_parse() -> None:
    bad = check_code("Write a Python function that adds two numbers.", "", "def add(a, b):\nreturn a + b")
    assert bad is not None and bad["kind"] == "code_syntax" and "indented block" in bad["message"]
    assert check_code("Write a Python function that adds two numbers.", "", "def add(a, b):\n    return a + b") is None
    fenced = "Here it is:\n```python\ndef f(x):\n    return x +\n```\nIt adds one."
    assert check_code("Write a function.", "", fenced)["kind"] == "code_syntax"
    # other languages and output pasted after the code are not Python syntax errors
    assert check_code("Write a Java class.", "", "class A {\n  int x;\n}") is None
    assert check_code("Write a function.", "", "def f():\n    return 1\n\nOutput:\n1 2 3") is None


def test_json_format() -> None:
    assert check_format("Return the data in JSON format.", "", "name: Bob, age: 3")["kind"] == "format"
    assert check_format("Return the data in JSON format.", "", '{"name": "Bob", "age": 3}') is None
    assert check_format("Write a Python script that saves JSON.", "", "import json") is None


def test_step_result_shape(store) -> None:
    rows = [("Calculate the average of [2, 4, 5, 7, 8].", "", "5.4"), ("What is 2 + 2?", "", "4"),
            ("Write a poem.", "", "Roses are red.")]
    step = Verifier()
    r = step.verify_rows("d", np.arange(3), *[list(c) for c in zip(*rows, strict=True)])
    assert r.flag.tolist() == [True, False, False] and r.score.tolist() == [1.0, 0.0, 0.0]
    assert r.details[0]["message"] == "the mean of 2, 4, 5, 7, 8 is 5.2, answer says 5.4"
    assert r.summary["by_kind"] == {"statistics": 1}
    from itaudit.audit import save_result
    from itaudit.report.view import CheckView

    save_result(store, r)   # the report renders the stored run
    run = store.query("SELECT * FROM latest_checks WHERE check_name = 'verifier'").row(0, named=True)
    assert step.render_text(r) == ["1 wrong answers (statistics 1)"]
    assert "answer says 5.4" in step.render_html(CheckView.load(store, "d", run))
    assert verify("What is 7 times 6?", "", "7 times 6 is 48.")["expected"] == "42"
    with pytest.raises(ItauditError, match="unknown kind"):
        Verifier({"kinds": "statistics,astrology"}).verify_rows("d", np.arange(0), [], [], [])


def test_code_blocks_prose_stubs_and_shell() -> None:
    ins = "Can you give an example in Python?"
    # unlabeled shell block and prose around a valid Python block: nothing to flag
    ok = "First install it:\n```\npip install matplotlib\n```\nThen:\n```\nimport matplotlib\nx = 1\n```\nDone."
    assert check_code(ins, "", ok) is None
    # code followed by printed output lines, and a stub to fill in, are not syntax errors
    assert check_code(ins, "", "def f(a):\n    return a\n\n\nprint(f(3))\nUnsorted array\n1 2 3") is None
    assert check_code("Design a programming problem in Python.", "",
                      "```python\ndef solve(prices):\n    # Implement your solution here\n```") is None
    assert check_code("Write out the function signature of gcd in Python.", "", "def gcd(x, y):") is None
    # HTML-escaped quotes are an encoding artefact, not a syntax error
    assert check_code(ins, "", "```python\nname = &quot;a&quot;\nprint(name)\n```") is None
    lost = "def f(n):\nif n <= 1:\nreturn 1\nreturn n * f(n - 1)"
    assert check_code("Write a Python function for factorial.", "", lost)["kind"] == "code_syntax"


def test_templates_and_export_escapes_not_flagged() -> None:
    ins = "Write it in Python."
    assert check_code(ins, "", "```python\nimport os\ndef decrypt\\_file(key, file\\_path):\n    return key\n```") is None
    assert check_code(ins, "", "```python\nimport os\nN, M = # dimensions of the grid\nx = 1\n```") is None
    assert check_code(ins, "", "```python\nimport x\ncols = VectorAssembler(inputCols=[<list of columns>])\n```") is None
    bug = "```python\nimport x\non_press = lambda x: self.current = 'settings'\ny = 2\n```"
    assert check_code(ins, "", bug)["kind"] == "code_syntax"
