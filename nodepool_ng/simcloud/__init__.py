"""simcloud: a simulated OpenStack cloud serving the real REST APIs on loopback.

Entry points: `profile.load_profile_file` / `profile.build_profiles` (validate a profile),
`service.SimCloudService` (serve several clouds, write clouds.yaml), `client.AdminClient`
(inspection and fault injection). See doc/simcloud.md.
"""
