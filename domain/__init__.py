"""The pure meter core: state, rules, money and supervision policy.

Imports no thespian and reads no clock: time is always a parameter.
"""
