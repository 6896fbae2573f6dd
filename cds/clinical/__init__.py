"""FHIR resources -> clinical facts (drug identity, doses, regimen, renal, patient context).

The public surface is :func:`extract_facts` with :class:`HookInput`; the fact dataclasses
are in :mod:`cds.clinical.facts` and the numbers this layer needs in
:mod:`cds.clinical.params`.
"""
